-- homa.lua: a Wireshark/tshark dissector for Homa, over IP protocol 146 (the Linux
-- module, and this project's raw IP transport) and over UDP (this project's default
-- transport, where the Homa packet is the UDP payload and the Homa port is the UDP port).
--
-- Install: copy this file into Wireshark's personal Lua plugins folder (Help > About
-- Wireshark > Folders > Personal Lua Plugins; ~/.local/lib/wireshark/plugins on Linux), or
-- load it for one run: `tshark -X lua_script:wireshark/homa.lua -r capture.pcap`.
-- See wireshark/README.md.
--
-- Every field is named as `homa dump --json` names it: dump key K is the field `homa.K`
-- for the common header (homa.type, homa.sport, homa.sender_id...) and `homa.<type>.K` for
-- a type's own fields (homa.data.offset, homa.grant.priority, homa.ack.client_id...).
-- A packet is judged as `homa dump` judges it: one that a receiver would drop gets
-- homa.error and homa.reason (the same words) and an expert-info error instead of fields.
-- crates/cli/tests/wireshark.rs checks all of it against `homa dump`, packet by packet.
--
-- Written for Wireshark 3.6 and later (Lua 5.2 to 5.4): no bitwise operators.

local homa = Proto("homa", "Homa")

-- Packet types: code -> name (as PROTOCOL.md and `homa dump` write them), header length.
local DATA, GRANT, RESEND, CUTOFFS, ACK = 0x10, 0x11, 0x12, 0x15, 0x18
local TYPE_NAMES = {
    [0x10] = "DATA",
    [0x11] = "GRANT",
    [0x12] = "RESEND",
    [0x13] = "RPC_UNKNOWN",
    [0x14] = "BUSY",
    [0x15] = "CUTOFFS",
    [0x16] = "FREEZE",
    [0x17] = "NEED_ACK",
    [0x18] = "ACK",
}
local HEADER_LEN = {
    [0x10] = 56, [0x11] = 33, [0x12] = 37, [0x13] = 28, [0x14] = 28,
    [0x15] = 62, [0x16] = 28, [0x17] = 28, [0x18] = 80,
}
local COMMON_HEADER_LEN = 28
local MAX_ACKS = 5
-- seg.offset meaning "the offset is in sequence" (what the Linux module sends), and the
-- RESEND length meaning "everything sent so far".
local ALL_ONES = 0xFFFFFFFF

local f = homa.fields
-- Common header.
f.type = ProtoField.uint8("homa.type", "Type", base.HEX, TYPE_NAMES)
f.sport = ProtoField.uint16("homa.sport", "Source port", base.DEC)
f.dport = ProtoField.uint16("homa.dport", "Destination port", base.DEC)
f.sequence = ProtoField.uint32("homa.sequence", "Sequence", base.DEC)
f.doff = ProtoField.uint8("homa.doff", "Data offset (header words)", base.DEC, nil, 0xF0)
f.flags = ProtoField.uint8("homa.flags", "Flags", base.HEX)
f.window = ProtoField.uint16("homa.window", "Window", base.DEC)
f.checksum = ProtoField.uint16("homa.checksum", "Checksum", base.HEX)
f.urgent = ProtoField.uint16("homa.urgent", "Urgent", base.HEX)
f.sender_id = ProtoField.uint64("homa.sender_id", "Sender id", base.DEC)
f.rpc_id = ProtoField.uint64("homa.rpc_id", "RPC id (the client's, even)", base.DEC)
-- Where the packet sat in a UDP datagram that held several (a GSO send captured before
-- segmentation), and how much of it the capture kept.
f.gso_index = ProtoField.uint32("homa.gso_index", "GSO index", base.DEC)
f.gso_count = ProtoField.uint32("homa.gso_count", "GSO count", base.DEC)
f.captured = ProtoField.uint32("homa.captured", "Homa bytes captured", base.DEC)
f.homa_len = ProtoField.uint32("homa.homa_len", "Homa length", base.DEC)
-- A packet that does not decode.
f.error = ProtoField.string("homa.error", "Error")
f.reason = ProtoField.string("homa.reason", "Reason")
-- DATA.
f.data_message_length = ProtoField.uint32("homa.data.message_length", "Message length", base.DEC)
f.data_incoming = ProtoField.uint32("homa.data.incoming", "Incoming", base.DEC)
f.data_ack_client_id = ProtoField.uint64("homa.data.ack_client_id", "Ack client id", base.DEC)
f.data_ack_server_port = ProtoField.uint16("homa.data.ack_server_port", "Ack server port", base.DEC)
f.data_cutoff_version = ProtoField.uint16("homa.data.cutoff_version", "Cutoff version", base.DEC)
f.data_retransmit = ProtoField.uint8("homa.data.retransmit", "Retransmit", base.DEC)
f.data_seg_offset = ProtoField.uint32("homa.data.seg_offset", "seg.offset", base.DEC)
f.data_offset = ProtoField.uint32("homa.data.offset", "Offset", base.DEC)
f.data_payload_len = ProtoField.uint32("homa.data.payload_len", "Payload length", base.DEC)
f.data_payload = ProtoField.bytes("homa.data.payload", "Payload")
f.data_ext_flags = ProtoField.uint8("homa.data.ext_flags",
    "Extension flags (one-way messages; 0 from the module)", base.HEX)
-- GRANT.
f.grant_offset = ProtoField.uint32("homa.grant.offset", "Offset", base.DEC)
f.grant_priority = ProtoField.uint8("homa.grant.priority", "Priority", base.DEC)
-- RESEND.
f.resend_offset = ProtoField.uint32("homa.resend.offset", "Offset", base.DEC)
f.resend_length = ProtoField.uint32("homa.resend.length", "Length", base.DEC,
    { [ALL_ONES] = "everything sent so far" })
f.resend_priority = ProtoField.uint8("homa.resend.priority", "Priority", base.DEC)
-- CUTOFFS.
f.cutoffs_unsched_cutoffs = ProtoField.uint32("homa.cutoffs.unsched_cutoffs", "Unscheduled cutoff", base.DEC)
f.cutoffs_cutoff_version = ProtoField.uint16("homa.cutoffs.cutoff_version", "Cutoff version", base.DEC)
f.cutoffs_mark = ProtoField.string("homa.cutoffs.mark", "Mark in slot 0 (ours, not the module's)")
f.cutoffs_mark_length = ProtoField.uint32("homa.cutoffs.mark_length", "Refused message length", base.DEC)
-- ACK.
f.ack_num_acks = ProtoField.uint16("homa.ack.num_acks", "Acks", base.DEC)
f.ack_client_id = ProtoField.uint64("homa.ack.client_id", "Client id", base.DEC)
f.ack_server_port = ProtoField.uint16("homa.ack.server_port", "Server port", base.DEC)

local ef_bad = ProtoExpert.new("homa.bad", "Undecodable Homa packet",
    expert.group.MALFORMED, expert.severity.ERROR)
local ef_cut = ProtoExpert.new("homa.cut", "Homa packet cut by the capture's snap length",
    expert.group.UNDECODED, expert.severity.NOTE)
local ef_header_cut = ProtoExpert.new("homa.header_cut",
    "Homa header cut by the capture's snap length", expert.group.UNDECODED, expert.severity.WARN)
homa.experts = { ef_bad, ef_cut, ef_header_cut }

homa.prefs.udp_port = Pref.uint("UDP port", 4000,
    "Decode UDP datagrams from or to this port as Homa (0: none)")
homa.prefs.heuristic = Pref.bool("Find Homa over UDP on any port", true,
    "Try every UDP datagram that no other dissector claims: taken as Homa when its "
    .. "first header names the datagram's own ports and has a Homa type and data offset")
homa.prefs.max_message_length = Pref.uint("Largest message length", 1000000,
    "DATA packets of longer messages are shown as errors, as `homa dump "
    .. "--max-message-length` does")

-- ---- Reading and judging one packet ----

-- Big-endian fields `at` bytes into the tvb. A packet is `at` into the tvb (more than 0 for
-- the later packets of a coalesced datagram), `len` bytes long on the wire, of which
-- `kept` were captured.
local function u8(tvb, at) return tvb:range(at, 1):uint() end
local function u16(tvb, at) return tvb:range(at, 2):uint() end
local function u32(tvb, at) return tvb:range(at, 4):uint() end

local function type_name(code)
    return (code and TYPE_NAMES[code]) or "packet"
end

-- The DATA offset: seg.offset, or sequence when seg.offset is all ones.
local function data_offset(tvb, at)
    local seg = u32(tvb, at + 52)
    if seg == ALL_ONES then
        return u32(tvb, at + 4)
    end
    return seg
end

-- Judge a packet as a receiver (and `homa dump`) would: nil if it decodes, else the
-- reason and the message `homa dump` gives. Its header is read from the `kept` bytes
-- captured; a DATA packet's payload is judged by its length on the wire, `len`.
local function judge(tvb, at, kept, len)
    if kept > len then kept = len end
    local code = nil
    if kept > 11 then code = u8(tvb, at + 11) end
    if code ~= nil and TYPE_NAMES[code] == nil then
        return "unknown_type", string.format("unknown packet type 0x%02x", code)
    end
    local needed = (code and HEADER_LEN[code]) or COMMON_HEADER_LEN
    if len < needed then
        return "truncated", string.format("truncated: %s needs %d header bytes, got %d",
            type_name(code), needed, len)
    end
    if kept < needed then
        return "capture_truncated", string.format(
            "capture truncated: %d of %d Homa bytes captured, fewer than the %d-byte %s header",
            kept, len, needed, type_name(code))
    end
    if code == ACK then
        local n = u16(tvb, at + 28)
        if n > MAX_ACKS then
            return "too_many_acks", string.format("ACK num_acks %d exceeds 5", n)
        end
    elseif code == DATA then
        local message_length = u32(tvb, at + 28)
        local max = homa.prefs.max_message_length
        if message_length == 0 then
            return "zero_message_length", "DATA message_length is 0"
        end
        if message_length > max then
            return "message_too_long", string.format(
                "DATA message_length %d exceeds the maximum %d", message_length, max)
        end
        local offset = data_offset(tvb, at)
        local payload = len - needed
        if offset + payload > message_length then
            return "segment_past_end", string.format(
                "DATA segment %d+%d runs past message_length %d", offset, payload, message_length)
        end
    end
    return nil
end

-- ---- Cutting a UDP datagram into packets ----
--
-- The runtime sends a run of same-size packets to one destination as one UDP GSO send; a
-- capture on the sending host before segmentation (always on loopback) shows them back to
-- back in one datagram. As `homa dump` does: a control packet is exactly its header, so
-- what follows is another packet; a DATA packet ends where a packet with the same ports
-- starts and decodes. Returns "one", or "segments" and the segment size, or "first_end_cut"
-- (the capture cut the datagram before anything tells where the first DATA packet ends).

local function piece(kept, len, segment, at)
    local piece_len = math.min(segment, math.max(len - at, 0))
    local piece_kept = math.max(math.min(at + piece_len, kept) - at, 0)
    return piece_kept, piece_len
end

local function layout(tvb, kept, len)
    -- The first header must be whole and valid as a view (type known, acks that fit).
    if kept < COMMON_HEADER_LEN then return "one" end
    local code = u8(tvb, 11)
    local header = HEADER_LEN[code]
    if header == nil or kept < header then return "one" end
    if code == ACK and u16(tvb, 28) > MAX_ACKS then return "one" end
    if len <= header then return "one" end
    if code ~= DATA then return "segments", header end
    -- A first packet that is not valid alone (with no payload) gives no segment size
    -- worth trusting.
    if judge(tvb, 0, header, header) ~= nil then return "one" end
    local rest_of_message = math.max(u32(tvb, 28) - data_offset(tvb, 0), 0)
    local longest = header + rest_of_message
    local function piece_reason(at)
        local pk, pl = piece(kept, len, at, at)
        return judge(tvb, at, pk, pl)
    end
    -- The places where the first packet's ports recur, found by a plain string search (a
    -- DATA packet on loopback is up to 64 KB, most of it searched).
    local last = math.min(longest, len - 1, math.max(kept - COMMON_HEADER_LEN, 0))
    if last >= header then
        local bytes = tvb:raw(0, last + 4)
        local ports = bytes:sub(1, 4)
        local from = header + 1
        while true do
            local found = string.find(bytes, ports, from, true)
            if found == nil or found - 1 > last then break end
            if piece_reason(found - 1) == nil then
                return "segments", found - 1
            end
            from = found + 1
        end
    end
    if longest < len and piece_reason(longest) == "capture_truncated" then
        return "first_end_cut"
    end
    return "one"
end

-- ---- This project's extensions (docs/PROTOCOL.md sections 10 and 11) ----

-- The words for a DATA packet's extension flags (the pad byte at offset 49), as `homa
-- dump` writes them: one_way (bit 0), ack_one_way (bit 1), other bits in hex.
local function ext_flag_words(bits)
    local words = {}
    if bits % 2 == 1 then words[#words + 1] = "one_way" end
    if math.floor(bits / 2) % 2 == 1 then words[#words + 1] = "ack_one_way" end
    local rest = bits - bits % 4
    if rest ~= 0 then words[#words + 1] = string.format("0x%02x", rest) end
    return table.concat(words, ",")
end

-- The mark in a CUTOFFS packet's slot 0, as `homa dump` names it, and the refused
-- length for a refusal; nil for anything else (our 0, the module's INT_MAX).
local ONE_WAY_MARKS = {
    [0x4F574D51] = "one_way_query", [0x4F574D41] = "one_way_accept",
    [0x4F574D52] = "one_way_refuse",
    [0x4F574D4E] = "one_way_no_socket",
}
local function cutoffs_mark(slot0)
    if ONE_WAY_MARKS[slot0] then return ONE_WAY_MARKS[slot0], nil end
    if slot0 < 0x80000000 then return nil, nil end
    local length = slot0 % 0x40000000
    if math.floor(slot0 / 0x40000000) % 2 == 1 then return "refuse_never_fits", length end
    return "refuse_too_long", length
end

-- ---- The tree ----

-- The Info-column words for a DATA packet, as `homa dump` writes its text line.
local function summary_data(tvb, at, len_known, payload_len)
    local offset = data_offset(tvb, at)
    local s = string.format(" bytes=%d..%s/%d incoming=%d cutoff_version=%d", offset,
        len_known and tostring(offset + payload_len) or "?",
        u32(tvb, at + 28), u32(tvb, at + 32), u16(tvb, at + 46))
    local seg = u32(tvb, at + 52)
    if seg ~= ALL_ONES then s = s .. string.format(" seg.offset=%d", seg) end
    local retransmit = u8(tvb, at + 48)
    if retransmit ~= 0 then s = s .. string.format(" retransmit=%d", retransmit) end
    local ack_id = tvb:range(at + 36, 8):uint64()
    local ack_port = u16(tvb, at + 44)
    if tostring(ack_id) ~= "0" or ack_port ~= 0 then
        s = s .. string.format(" ack=(%s,%d)", tostring(ack_id), ack_port)
    end
    local ext = u8(tvb, at + 49)
    if ext ~= 0 then s = s .. " ext_flags=" .. ext_flag_words(ext) end
    return s
end

-- Add one packet (`at` into the tvb, `kept` bytes captured of `len`) under `tree`; returns
-- its line for the Info column. `gso` is nil for a packet alone in its datagram, else
-- {index, count} (count nil when unknown); `len_known` is false when the capture hid
-- where the packet ends.
local function add_packet(tvb, tree, at, kept, len, gso, len_known, judged)
    local shown = math.min(kept, len)
    -- A piece past the end of what the capture kept has no bytes to point at.
    local range = tvb:range(math.min(at, tvb:len()), shown)
    local reason, message
    if judged then
        -- The error of the piece the cut found, shown over the rest of the datagram.
        reason, message = judged[1], judged[2]
    elseif len_known then
        reason, message = judge(tvb, at, kept, len)
    else
        -- Only the header can be judged: where the payload ends is unknown.
        reason, message = judge(tvb, at, 56, 56)
    end
    local code = kept > 11 and u8(tvb, at + 11) or nil
    local t = tree:add(homa, range)

    if gso then
        t:add(f.gso_index, gso[1]):set_generated()
        if gso[2] then t:add(f.gso_count, gso[2]):set_generated() end
    end
    local info
    if reason then
        if shown >= 2 then t:add(f.sport, tvb:range(at, 2)) end
        if shown >= 4 then t:add(f.dport, tvb:range(at + 2, 2)) end
        t:add(f.error, message):set_generated()
        t:add(f.reason, reason):set_generated()
        -- Not the packet's fault when the capture cut its header.
        t:add_proto_expert_info(reason == "capture_truncated" and ef_header_cut or ef_bad, message)
        info = "ERROR(" .. reason .. "): " .. message
    else
        t:add(f.type, tvb:range(at + 11, 1))
        t:add(f.sport, tvb:range(at, 2))
        t:add(f.dport, tvb:range(at + 2, 2))
        t:add(f.sender_id, tvb:range(at + 20, 8))
        local sender_id = tvb:range(at + 20, 8):uint64()
        t:add(f.rpc_id, sender_id - sender_id % 2):set_generated()
        t:add(f.sequence, tvb:range(at + 4, 4))
        t:add(f.doff, tvb:range(at + 12, 1))
        t:add(f.flags, tvb:range(at + 13, 1))
        t:add(f.window, tvb:range(at + 14, 2))
        t:add(f.checksum, tvb:range(at + 16, 2))
        t:add(f.urgent, tvb:range(at + 18, 2))
        info = string.format("%d \226\134\146 %d %s id=%s", u16(tvb, at), u16(tvb, at + 2),
            TYPE_NAMES[code], tostring(sender_id))
        if code == DATA then
            local payload_len = len - 56
            t:add(f.data_message_length, tvb:range(at + 28, 4))
            t:add(f.data_incoming, tvb:range(at + 32, 4))
            t:add(f.data_ack_client_id, tvb:range(at + 36, 8))
            t:add(f.data_ack_server_port, tvb:range(at + 44, 2))
            t:add(f.data_cutoff_version, tvb:range(at + 46, 2))
            t:add(f.data_retransmit, tvb:range(at + 48, 1))
            local ext_bits = u8(tvb, at + 49)
            local ext = t:add(f.data_ext_flags, tvb:range(at + 49, 1))
            if ext_bits ~= 0 then ext:append_text(" (" .. ext_flag_words(ext_bits) .. ")") end
            t:add(f.data_seg_offset, tvb:range(at + 52, 4))
            t:add(f.data_offset, tvb:range(u32(tvb, at + 52) == ALL_ONES and at + 4 or at + 52, 4),
                data_offset(tvb, at)):set_generated()
            if len_known then
                t:add(f.data_payload_len, payload_len):set_generated()
            end
            if shown > 56 then
                t:add(f.data_payload, tvb:range(at + 56, shown - 56))
            end
            info = info .. summary_data(tvb, at, len_known, payload_len)
        elseif code == GRANT then
            t:add(f.grant_offset, tvb:range(at + 28, 4))
            t:add(f.grant_priority, tvb:range(at + 32, 1))
            info = info .. string.format(" offset=%d priority=%d", u32(tvb, at + 28), u8(tvb, at + 32))
        elseif code == RESEND then
            t:add(f.resend_offset, tvb:range(at + 28, 4))
            t:add(f.resend_length, tvb:range(at + 32, 4))
            t:add(f.resend_priority, tvb:range(at + 36, 1))
            local length = u32(tvb, at + 32)
            info = info .. string.format(" offset=%d length=%s priority=%d", u32(tvb, at + 28),
                length == ALL_ONES and "-1" or tostring(length), u8(tvb, at + 36))
        elseif code == CUTOFFS then
            local list = {}
            for i = 0, 7 do
                local item = t:add(f.cutoffs_unsched_cutoffs, tvb:range(at + 28 + 4 * i, 4))
                item:append_text(string.format(" (priority %d)", i))
                list[#list + 1] = tostring(u32(tvb, at + 28 + 4 * i))
            end
            t:add(f.cutoffs_cutoff_version, tvb:range(at + 60, 2))
            info = info .. string.format(" cutoffs=%s cutoff_version=%d", table.concat(list, ","),
                u16(tvb, at + 60))
            local mark, length = cutoffs_mark(u32(tvb, at + 28))
            if mark then
                t:add(f.cutoffs_mark, tvb:range(at + 28, 4), mark)
                info = info .. " mark=" .. mark
                if length then
                    t:add(f.cutoffs_mark_length, tvb:range(at + 28, 4), length)
                    info = info .. string.format("(%d)", length)
                end
            end
        elseif code == ACK then
            local n = u16(tvb, at + 28)
            t:add(f.ack_num_acks, tvb:range(at + 28, 2))
            local list = {}
            for i = 0, n - 1 do
                local entry = at + 30 + 10 * i
                local pair = string.format("(%s,%d)", tostring(tvb:range(entry, 8):uint64()),
                    u16(tvb, entry + 8))
                local a = t:add(tvb:range(entry, 10), string.format("Ack %d: %s", i + 1, pair))
                a:add(f.ack_client_id, tvb:range(entry, 8))
                a:add(f.ack_server_port, tvb:range(entry + 8, 2))
                list[#list + 1] = pair
            end
            info = info .. " acks=[" .. table.concat(list, ",") .. "]"
        end
        if kept < len then
            t:add(f.captured, kept):set_generated()
            t:add(f.homa_len, len):set_generated()
            t:add_proto_expert_info(ef_cut, string.format("%d of %d Homa bytes captured", kept, len))
            info = info .. string.format(" captured=%d/%d", kept, len)
        end
    end
    t:append_text(string.format(", %s", info))
    if gso then
        info = string.format("[%d/%s] %s", gso[1], gso[2] and tostring(gso[2]) or "?", info)
    end
    return info
end

-- Dissect the Homa bytes of a frame; `udp` says whether they are a UDP payload (which may
-- hold several packets). Returns the bytes consumed.
local function dissect(tvb, pinfo, tree, udp)
    local len = tvb:reported_length_remaining()
    local kept = tvb:len()
    if len == 0 then
        -- An empty datagram: the runtime sends these to its own socket as wake-ups.
        return 0
    end
    pinfo.cols.protocol = "Homa"
    local kind, segment = "one", nil
    if udp then kind, segment = layout(tvb, kept, len) end

    local lines = {}
    if kind == "one" then
        lines[1] = add_packet(tvb, tree, 0, kept, len, nil, true)
    elseif kind == "first_end_cut" then
        -- The first header, and nothing about the first packet's length; the packets
        -- after it are not shown.
        lines[1] = add_packet(tvb, tree, 0, kept, kept, { 1, nil }, false)
    else
        local count = math.ceil(len / segment)
        local pieces = {}
        for at = 0, len - 1, segment do
            local pk, pl = piece(kept, len, segment, at)
            local reason, message = judge(tvb, at, pk, pl)
            if reason == "capture_truncated" then
                -- The snap length cut this header and left nothing of the packets after
                -- it: they are counted in gso_count, not shown.
                break
            elseif reason ~= nil then
                -- Past a piece that does not decode the cuts are guesswork: one error for
                -- the rest of the datagram.
                pieces[#pieces + 1] = { at, math.max(kept - at, 0), len - at, { reason, message } }
                count = #pieces
                break
            end
            pieces[#pieces + 1] = { at, pk, pl }
        end
        for i, p in ipairs(pieces) do
            lines[#lines + 1] = add_packet(tvb, tree, p[1], p[2], p[3], { i, count }, true, p[4])
        end
    end
    pinfo.cols.info = table.concat(lines, " ; ")
    -- Not 0 when the capture kept none of it: 0 would tell the caller "not Homa".
    return len
end

-- Over IP protocol 146 the Homa packet is the IP payload, never several.
function homa.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree, false)
end

-- Over UDP: a second protocol object only to hold the UDP entry point (a Lua protocol has
-- one dissector function); its tree items are all `homa`'s.
local homa_udp = Proto("homa_udp", "Homa over UDP")
function homa_udp.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree, true)
end

-- The heuristic for UDP on any port. It accepts a datagram only when its first Homa
-- header names the UDP ports as its own (the runtime's Homa port is its UDP port), its
-- type byte is a Homa type, its data-offset byte is the one that type is sent with (0xE0
-- for DATA, 0x50 otherwise) and it is long enough for that type's header: about 45 bits
-- that must match by chance, which random bytes do once in 10^13 datagrams.
local function heuristic(tvb, pinfo, tree)
    if not homa.prefs.heuristic then return false end
    if tvb:len() < 13 or tvb:reported_length_remaining() < COMMON_HEADER_LEN then
        return false
    end
    local code = u8(tvb, 11)
    local header = HEADER_LEN[code]
    if header == nil or tvb:reported_length_remaining() < header then return false end
    if u16(tvb, 0) ~= pinfo.src_port or u16(tvb, 2) ~= pinfo.dst_port then return false end
    local doff = u8(tvb, 12)
    if (code == DATA and doff ~= 0xE0) or (code ~= DATA and doff ~= 0x50) then return false end
    dissect(tvb, pinfo, tree, true)
    return true
end

DissectorTable.get("ip.proto"):add(146, homa)

local udp_table = DissectorTable.get("udp.port")
local registered_port = 0
-- The dissector the port had before (ICQ's, for 4000), given back when the port changes.
local displaced = nil
local function register_port()
    if registered_port ~= 0 then
        udp_table:remove(registered_port, homa_udp)
        if displaced then udp_table:add(registered_port, displaced) end
    end
    registered_port = homa.prefs.udp_port
    displaced = nil
    if registered_port ~= 0 then
        displaced = udp_table:get_dissector(registered_port)
        udp_table:add(registered_port, homa_udp)
    end
end
register_port()
function homa.prefs_changed()
    register_port()
end

homa_udp:register_heuristic("udp", heuristic)
