//! Hex text, as kas writes secrets, signatures and session cookies.

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `text`, if it is hex and at most `max_bytes` long once
/// decoded (odd lengths and other characters are refused).
pub fn decode(text: &str, max_bytes: usize) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > max_bytes * 2 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `N` random bytes as hex: secrets, CSRF tokens, keys.
pub fn random<const N: usize>() -> String {
    let bytes: [u8; N] = rand::random();
    encode(&bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(super::encode(&[0, 171, 255]), "00abff");
        assert_eq!(super::decode("00abff", 3), Some(vec![0, 171, 255]));
        for bad in ["0", "zz", "00abff00", "ðð"] {
            assert_eq!(super::decode(bad, 3), None, "{bad}");
        }
        assert_eq!(super::random::<16>().len(), 32);
    }
}
