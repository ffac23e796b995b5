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
/// the whole string or on each group), and hexdump lines such as
/// `0010  30 e4 b9 7d 00 00` whose leading offset is checked and dropped.
///
/// A line's first group is taken as an offset when it has at least four digits and every
/// other group on the line is a single byte, as in `hexdump -C`, Wireshark and the captures
/// README; anything else on such a line (an ASCII column) is an error rather than silently
/// decoded.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::new();
    let mut digits = 0usize;
    let mut high: Option<u8> = None;
    for (line_idx, line) in text.lines().enumerate() {
        let line_no = line_idx + 1;
        let groups: Vec<&str> = line.split_whitespace().collect();
        let mut rest = &groups[..];
        if let [first, others @ ..] = rest {
            let off = strip_0x(first.strip_suffix(':').unwrap_or(first));
            let is_offset = !others.is_empty()
                && high.is_none()
                && off.len() >= 4
                && off.chars().all(|c| c.is_ascii_hexdigit())
                && others.iter().all(|g| {
                    let g = strip_0x(g);
                    g.len() == 2 && g.chars().all(|c| c.is_ascii_hexdigit())
                });
            if is_offset {
                let offset = u64::from_str_radix(off, 16).unwrap_or(u64::MAX);
                if offset != out.len() as u64 {
                    return Err(HexError::OffsetMismatch {
                        line: line_no,
                        offset,
                        have: out.len(),
                    });
                }
                rest = others;
            }
        }
        for group in rest {
            let group_digits = strip_0x(group);
            // Column of the group's first digit, for the error message.
            let start = line[..group.as_ptr() as usize - line.as_ptr() as usize]
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
    }
    if high.is_some() {
        return Err(HexError::OddDigits(digits));
    }
    if out.is_empty() {
        return Err(HexError::Empty);
    }
    Ok(out)
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
