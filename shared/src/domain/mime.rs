//! Mail headers as RFC 5322 and RFC 2047 want them: one value per header, no line breaks in
//! it, non-ASCII subjects as encoded words, and every line folded to stay near 78 characters
//! (SES and Gmail refuse lines over 998). Shared by the SES mailer and the Gmail handlers.

use base64::Engine as _;

/// One header, folded, with its CRLF; refuses a value that would break the line.
pub fn header_line(name: &str, value: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("header {name}: a value may not contain a line break or a control character"));
    }
    let value = value.trim();
    let value = if value.is_ascii() {
        value.to_owned()
    } else if name.eq_ignore_ascii_case("Subject") {
        encoded_words(value)
    } else {
        return Err(format!("header {name}: only ASCII can be written here"));
    };
    Ok(fold(name, &value))
}

/// RFC 2047 encoded words (UTF-8, base64, at most 39 bytes each: 64 characters), separated by
/// spaces, so that even the first stays within 76 characters on the `Subject:` line.
pub fn encoded_words(s: &str) -> String {
    let encode =
        |chunk: &str| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(chunk.as_bytes()));
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 39 {
            words.push(encode(&chunk));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(encode(&chunk));
    }
    words.join(" ")
}

/// `Name: value` folded before spaces so lines stay near 78 characters, with CRLF.
pub fn fold(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    for word in value.split(' ') {
        if !word.is_empty() && line_len > name.len() + 1 && line_len + 1 + word.len() > 78 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
    out
}
