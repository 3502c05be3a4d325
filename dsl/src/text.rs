//! String literals: escapes, triple-quoted dedenting, and the reverse for the formatter.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes written as a string literal. Contents and xattr values need not be UTF-8
/// (`"\xff"`), so the tree keeps bytes; serde shows them in the language's escaped
/// form, which keeps snapshots and plans readable.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The text as the language would write it between quotes.
    pub fn escaped(&self) -> String {
        escape(&self.0)
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", escape(&self.0))
    }
}

impl From<&str> for Bytes {
    fn from(s: &str) -> Self {
        Bytes(s.as_bytes().to_vec())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&escape(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        unescape(&s).map(Bytes).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// A problem inside a literal, at a byte offset relative to the text given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapeError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
}

/// Decodes `\n \t \r \0 \\ \" \xHH`; any other escape is an error.
pub fn unescape(raw: &str) -> Result<Vec<u8>, EscapeError> {
    let mut out = Vec::with_capacity(raw.len());
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let Some(&c) = b.get(i + 1) else {
            return Err(EscapeError { offset: i, len: 1, message: "a string ends with a lone `\\`".into() });
        };
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'x' => {
                let hex = b.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                    None => {
                        let len = b.len().min(i + 4) - i;
                        return Err(EscapeError {
                            offset: i,
                            len,
                            message: "`\\x` must be followed by two hex digits".into(),
                        });
                    }
                }
            }
            _ => {
                let ch = raw[i + 1..].chars().next().unwrap_or('?');
                return Err(EscapeError {
                    offset: i,
                    len: 1 + ch.len_utf8(),
                    message: format!("unknown escape `\\{ch}`"),
                });
            }
        }
        i += 2;
    }
    Ok(out)
}

/// Removes the leading newline, the closing line's indentation and the common
/// indentation of a `"""` literal's raw text (escapes not yet decoded).
/// Returns the dedented text and, per output byte range, nothing: offsets of
/// escape errors are reported against the literal as a whole.
pub fn dedent(raw: &str) -> String {
    let body = raw.strip_prefix("\r\n").or_else(|| raw.strip_prefix('\n')).unwrap_or(raw);
    let mut lines: Vec<&str> = body.split('\n').collect();
    if let Some(last) = lines.last_mut() {
        if last.chars().all(|c| c == ' ' || c == '\t') {
            *last = "";
        }
    }
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches([' ', '\t']).len())
        .min()
        .unwrap_or(0);
    let out: Vec<&str> = lines.iter().map(|l| if l.trim().is_empty() { "" } else { &l[indent..] }).collect();
    out.join("\n")
}

/// The language's escaped form of bytes (without the quotes).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `"..."` for bytes.
pub fn quote(bytes: &[u8]) -> String {
    format!("\"{}\"", escape(bytes))
}

/// A `"""` literal for multi-line text, indented by `indent`, when it reads back
/// to exactly the same bytes; `None` when a plain literal must be used.
pub fn triple_quote(bytes: &[u8], indent: &str) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body = text.strip_suffix('\n')?;
    if !body.contains('\n') && body.len() < 60 {
        return None;
    }
    if text.contains("\"\"\"") || text.contains('\\') || text.contains('\r') {
        return None;
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return None;
    }
    let mut out = String::from("\"\"\"\n");
    for line in body.split('\n') {
        if !line.is_empty() {
            out.push_str(indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push_str(indent);
    out.push_str("\"\"\"");
    let raw = &out[3..out.len() - 3];
    let back = unescape(&dedent(raw)).ok()?;
    (back == bytes).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        let raw = r#"a\nb\t\\\"\x00\xff é"#;
        let bytes = unescape(raw).unwrap();
        assert_eq!(bytes, b"a\nb\t\\\"\x00\xff \xc3\xa9");
        assert_eq!(unescape(&escape(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn bad_escapes_are_located() {
        assert_eq!(unescape(r"ab\q").unwrap_err().offset, 2);
        assert!(unescape(r"\x4").unwrap_err().message.contains("two hex digits"));
        assert!(unescape(r"\xzz").is_err());
    }

    #[test]
    fn dedent_removes_common_indentation() {
        let raw = "\n    Stack three\n      lower layers\n\n    done.\n    ";
        assert_eq!(dedent(raw), "Stack three\n  lower layers\n\ndone.\n");
    }

    #[test]
    fn triple_quote_reads_back() {
        let text = b"line one\n  two\n\nthree\n";
        let lit = triple_quote(text, "    ").unwrap();
        let inner = &lit[3..lit.len() - 3];
        assert_eq!(unescape(&dedent(inner)).unwrap(), text);
        assert!(triple_quote(b"no newline at end", "").is_none());
        assert!(triple_quote(b"  all\n  indented\n", "").is_none());
    }
}
