//! Strict base64url without padding (RFC 7515 §2). Non-canonical encodings (set trailing bits,
//! padding, `+`/`/`, whitespace) are rejected so that every token has exactly one spelling:
//! a single changed byte can never decode to the same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// True when every byte is in the base64url alphabet.
pub fn is_alphabet(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Fresh random bytes from the OS, base64url-encoded (token ids, passwords).
pub fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    encode(buf)
}

/// Fills `buf` from the operating system's CSPRNG (ring's `SystemRandom`); see
/// [`crate::core::crypto::fill_random`].
pub fn fill_random(buf: &mut [u8]) {
    crate::core::crypto::fill_random(buf);
}
