//! Message contents that can be checked byte for byte without keeping copies.
//!
//! A request is `tag (u64 LE) || stream(request_seed(tag))`; a response is
//! `tag || stream(response_seed(tag))`. The tag is the RPC's global number, so a server can
//! spot a second execution of the same request and a client a response to another request.

/// Bytes at the start of every request and response: the RPC's tag.
pub const TAG_LEN: usize = 8;

/// A 64-bit mix of two words (splitmix64 finalizer over their combination).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn stream_word(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mix(*state, 0)
}

/// Seed of the pseudo-random bytes after the tag of request `tag`.
pub fn request_seed(tag: u64) -> u64 {
    mix(tag, 0x7265_7175_6573_7400)
}

/// Seed of the pseudo-random bytes after the tag of the response to `tag`.
pub fn response_seed(tag: u64) -> u64 {
    mix(tag, 0x7265_7370_6f6e_7365)
}

/// A message of `len` bytes (at least [`TAG_LEN`]) carrying `tag` then the stream of `seed`.
pub fn make(tag: u64, seed: u64, len: usize) -> Vec<u8> {
    let len = len.max(TAG_LEN);
    let mut v = vec![0u8; len];
    v[..TAG_LEN].copy_from_slice(&tag.to_le_bytes());
    let mut state = seed;
    let mut chunks = v[TAG_LEN..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&stream_word(&mut state).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&stream_word(&mut state).to_le_bytes()[..n]);
    v
}

/// The tag at the start of a message, if it is long enough to have one.
pub fn tag_of(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..TAG_LEN)?.try_into().ok()?))
}

/// True when the bytes after the tag are exactly the stream of `seed`.
pub fn verify_stream(seed: u64, data: &[u8]) -> bool {
    let Some(body) = data.get(TAG_LEN..) else {
        return false;
    };
    let mut state = seed;
    let mut chunks = body.chunks_exact(8);
    for c in &mut chunks {
        if c != stream_word(&mut state).to_le_bytes() {
            return false;
        }
    }
    let rest = chunks.remainder();
    rest == &stream_word(&mut state).to_le_bytes()[..rest.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_messages_verify_and_damage_is_seen() {
        for len in [1, 8, 9, 15, 16, 17, 1000] {
            let mut m = make(42, request_seed(42), len);
            assert_eq!(m.len(), len.max(TAG_LEN));
            assert_eq!(tag_of(&m), Some(42));
            assert!(verify_stream(request_seed(42), &m));
            assert_eq!(verify_stream(response_seed(42), &m), m.len() == TAG_LEN);
            if m.len() > TAG_LEN {
                let last = m.len() - 1;
                m[last] ^= 1;
                assert!(!verify_stream(request_seed(42), &m));
            }
        }
    }
}
