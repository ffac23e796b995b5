//! Reading a packet typed or pasted as hex.

/// Why a hex string is not a byte string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Nothing but whitespace (and offsets).
    #[error("no hex digits given")]
    Empty,
    /// A character that is not a hex digit.
    #[error("invalid hex digit {ch:?} at line {line}, column {column}")]
    BadDigit {
        /// The offending character.
        ch: char,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
    },
    /// An odd number of digits: the last byte is half there.
    #[error("odd number of hex digits ({0}): the last byte is incomplete")]
    OddDigits(usize),
    /// A hexdump line whose offset does not follow from the lines before it, so a line is
    /// missing or out of order.
    #[error("line {line}: hexdump offset {offset:#x} but {have:#x} bytes came before it")]
    OffsetMismatch {
        /// 1-based line.
        line: usize,
        /// The offset the line starts with.
        offset: u64,
        /// Bytes read from the lines before.
        have: usize,
    },
}

/// Parse hex bytes: digits with any whitespace between them, an optional `0x` prefix (on
/// the whole string or on each group), and the lines of the common hex dumps, whose
/// offsets are checked and dropped:
///
/// - `0010  30 e4 b9 7d 00 00` (Wireshark, the captures README): an offset of at least four
///   hex digits, then single bytes;
/// - `xxd`: `00000010: 30e4 b97d 0000  0..}..`, an offset with a colon, groups of any even
///   number of digits, and the ASCII column after two spaces;
/// - `hexdump -C`: `00000010  30 e4 b9 7d 00 00  |0..}..|`, the ASCII column between bars;
/// - `od -tx1` (also `-tx1z`, `-Ax`): seven-digit octal offsets (`0000020`), single bytes.
///
/// In hexdump and od output, a `*` line (lines like the one before it left out) repeats
/// that line up to the next offset, and a line holding only an offset ends the dump.
/// Anything else on a line with an offset (an ASCII column in another form) is an error
/// rather than silently decoded. `hexdump` without `-C` and `od -x` print 16-bit words in
/// the machine's byte order, which is not the packet's: give `-C` or `-tx1`.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::new();
    let mut digits = 0usize;
    let mut high: Option<u8> = None;
    // Whether a line with an offset came before (a dump, not bare hex).
    let mut dump = false;
    // The bytes of the last dump line, and whether a `*` said to repeat them.
    let mut last_line: (usize, usize) = (0, 0);
    let mut repeat = false;
    for (line_idx, raw) in text.lines().enumerate() {
        let line_no = line_idx + 1;
        let line = without_ascii_column(raw);
        let groups: Vec<&str> = line.split_whitespace().collect();
        if groups.is_empty() {
            continue;
        }
        if dump && groups == ["*"] && last_line.1 > last_line.0 {
            repeat = true;
            continue;
        }
        let mut rest = &groups[..];
        let mut xxd_groups: Vec<&str> = Vec::new();
        let offset = match rest {
            [first, others @ ..] if high.is_none() => {
                let xxd = first.strip_suffix(':');
                let off = strip_0x(xxd.unwrap_or(first));
                let digits_ok = off.len() >= 4 && off.chars().all(|c| c.is_ascii_hexdigit());
                if !digits_ok {
                    None
                } else if xxd.is_some() {
                    // xxd: the hex area ends at two spaces, where the ASCII column starts.
                    let after =
                        &line[first.as_ptr() as usize - line.as_ptr() as usize + first.len()..];
                    let after = after.trim_start();
                    let area = after.find("  ").map_or(after, |i| &after[..i]);
                    xxd_groups = area.split_whitespace().collect();
                    Some(off)
                } else if (others.is_empty() && dump)
                    || (!others.is_empty()
                        && others.iter().all(|g| {
                            let g = strip_0x(g);
                            g.len() == 2 && g.chars().all(|c| c.is_ascii_hexdigit())
                        }))
                {
                    Some(off)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(off) = offset {
            // od's offsets are octal, seven digits; the others' hex.
            let octal = off.len() == 7 && off.chars().all(|c| ('0'..='7').contains(&c));
            let offset = u64::from_str_radix(off, if octal { 8 } else { 16 }).unwrap_or(u64::MAX);
            if repeat {
                let (from, to) = last_line;
                while (out.len() as u64) < offset {
                    out.extend_from_within(from..to);
                }
                repeat = false;
            }
            if offset != out.len() as u64 {
                return Err(HexError::OffsetMismatch {
                    line: line_no,
                    offset,
                    have: out.len(),
                });
            }
            dump = true;
            rest = if xxd_groups.is_empty() {
                &groups[1..]
            } else {
                &xxd_groups[..]
            };
        }
        let line_start = out.len();
        for group in rest {
            let group_digits = strip_0x(group);
            // Column of the group's first digit, for the error message.
            let start = raw[..group.as_ptr() as usize - raw.as_ptr() as usize]
                .chars()
                .count()
                + (group.len() - group_digits.len());
            for (i, ch) in group_digits.chars().enumerate() {
                let Some(v) = ch.to_digit(16) else {
                    return Err(HexError::BadDigit {
                        ch,
                        line: line_no,
                        column: start + i + 1,
                    });
                };
                digits += 1;
                match high.take() {
                    None => high = Some(v as u8),
                    Some(h) => out.push(h << 4 | v as u8),
                }
            }
        }
        last_line = (line_start, out.len());
    }
    if high.is_some() {
        return Err(HexError::OddDigits(digits));
    }
    if out.is_empty() {
        return Err(HexError::Empty);
    }
    Ok(out)
}

/// `line` without the ASCII column of `hexdump -C` (`|..|`) or `od -tx1z` (`>..<`): from
/// the first bar (or `>`) on, when the line ends with a bar (or `<`). Hex digits are never
/// bars, so the first is where the column starts.
fn without_ascii_column(line: &str) -> &str {
    let trimmed = line.trim_end();
    for (open, close) in [('|', '|'), ('>', '<')] {
        if trimmed.len() > 1 && trimmed.ends_with(close) {
            if let Some(i) = trimmed.find(open) {
                if i < trimmed.len() - 1 {
                    return &line[..i];
                }
            }
        }
    }
    line
}

fn strip_0x(s: &str) -> &str {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_spaced_and_prefixed() {
        assert_eq!(parse_hex("0fa09c40").unwrap(), [0x0f, 0xa0, 0x9c, 0x40]);
        assert_eq!(parse_hex("0x0FA09C40").unwrap(), [0x0f, 0xa0, 0x9c, 0x40]);
        assert_eq!(
            parse_hex(" 0f a0\n9c\t40\n").unwrap(),
            [0x0f, 0xa0, 0x9c, 0x40]
        );
        assert_eq!(parse_hex("0x0f 0xa0").unwrap(), [0x0f, 0xa0]);
        // Groups of two bytes are data, not an offset followed by bytes.
        assert_eq!(parse_hex("0000 0fa0").unwrap(), [0, 0, 0x0f, 0xa0]);
    }

    #[test]
    fn hexdump_lines_drop_their_offsets() {
        let text = "0000  0f a0 9c 40 00 00 00 00 00 00 00 17 50 06 00 00\n\
                    0010  30 e4 b9 7d 00 00 00 00 00 00 03 e9\n";
        let b = parse_hex(text).unwrap();
        assert_eq!(b.len(), 28);
        assert_eq!(&b[..4], &[0x0f, 0xa0, 0x9c, 0x40]);
        assert_eq!(&b[24..], &[0, 0, 0x03, 0xe9]);
        // xxd-style colon after the offset.
        assert_eq!(
            parse_hex("00000000: 01 02\n00000002: 03").unwrap(),
            [1, 2, 3]
        );
    }

    /// 16 counting bytes, 48 zeros, then `|ab>c<|`: every dump below leaves out two or
    /// three lines of zeros with a `*` (except xxd) and has characters of the ASCII
    /// columns' delimiters in its ASCII column.
    fn counted() -> Vec<u8> {
        let mut b: Vec<u8> = (1..=16).collect();
        b.extend([0; 48]);
        b.extend(b"|ab>c<|");
        b
    }

    #[test]
    fn common_dump_tools_output() {
        let hexdump_c = "\
00000000  01 02 03 04 05 06 07 08  09 0a 0b 0c 0d 0e 0f 10  |................|
00000010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
*
00000040  7c 61 62 3e 63 3c 7c                              ||ab>c<||
00000047
";
        let od = "\
0000000 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10
0000020 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
*
0000100 7c 61 62 3e 63 3c 7c
0000107
";
        let od_z = "\
000000 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10  >................<
000010 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  >................<
*
000040 7c 61 62 3e 63 3c 7c                             >|ab>c<|<
000047
";
        let xxd = "\
00000000: 0102 0304 0506 0708 090a 0b0c 0d0e 0f10  ................
00000010: 0000 0000 0000 0000 0000 0000 0000 0000  ................
00000020: 0000 0000 0000 0000 0000 0000 0000 0000  ................
00000030: 0000 0000 0000 0000 0000 0000 0000 0000  ................
00000040: 7c61 623e 633c 7c                        |ab>c<|
";
        let xxd_g1 = "\
00000000: 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10  ................
00000010: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
00000020: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
00000030: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
00000040: 7c 61 62 3e 63 3c 7c                             |ab>c<|
";
        for (name, text) in [
            ("hexdump -C", hexdump_c),
            ("od -tx1", od),
            ("od -Ax -tx1z", od_z),
            ("xxd", xxd),
            ("xxd -g1", xxd_g1),
        ] {
            assert_eq!(parse_hex(text), Ok(counted()), "{name}");
        }
        // A dump that ends at a different length than its lines give is refused.
        assert!(matches!(
            parse_hex("00000000  01 02  |..|\n00000003\n"),
            Err(HexError::OffsetMismatch { line: 2, .. })
        ));
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(
            parse_hex("0f a0\n9c 4g"),
            Err(HexError::BadDigit {
                ch: 'g',
                line: 2,
                column: 5
            })
        );
        assert_eq!(parse_hex("0fa"), Err(HexError::OddDigits(3)));
        assert_eq!(parse_hex("  \n "), Err(HexError::Empty));
        assert_eq!(parse_hex("0x"), Err(HexError::Empty));
        // A missing hexdump line.
        assert_eq!(
            parse_hex("0000  01 02\n0010  03 04"),
            Err(HexError::OffsetMismatch {
                line: 2,
                offset: 0x10,
                have: 2
            })
        );
        // An ASCII column is not hex.
        assert!(matches!(
            parse_hex("0000  0f a0  ..@"),
            Err(HexError::BadDigit { ch: '.', .. })
        ));
    }
}
