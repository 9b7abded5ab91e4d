//! Text bounded by its size as encoded in the result document: a control character takes six
//! bytes there (`\u0001`), so a bound on raw bytes alone lets a guest grow the document sixfold.

/// Bytes `c` takes inside a JSON string, as serde_json writes it.
pub fn encoded_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{08}' | '\u{0C}' | '\n' | '\r' | '\t' => 2,
        '\u{00}'..='\u{1F}' => 6,
        c => c.len_utf8(),
    }
}

/// Cuts `text` after its last character whose JSON encoding still fits in `max` bytes (quotes
/// excluded); returns whether anything was cut.
pub fn truncate_encoded(text: &mut String, max: usize) -> bool {
    let mut used = 0usize;
    for (at, c) in text.char_indices() {
        used += encoded_len(c);
        if used > max {
            text.truncate(at);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_len(text: &str) -> usize {
        serde_json::to_string(text).unwrap().len() - 2
    }

    #[test]
    fn encoded_length_matches_serde_json() {
        let every_ascii: String = (0u8..128).map(char::from).collect();
        let text = format!("{every_ascii}é€😀\u{2028}");
        let ours: usize = text.chars().map(encoded_len).sum();
        assert_eq!(ours, json_len(&text));
    }

    #[test]
    fn control_characters_are_cut_by_their_encoded_size() {
        let mut text = "\u{1}".repeat(100);
        assert!(truncate_encoded(&mut text, 64));
        assert_eq!(text.chars().count(), 10);
        assert!(json_len(&text) <= 64);
        let mut plain = "abc".to_string();
        assert!(!truncate_encoded(&mut plain, 3));
        assert_eq!(plain, "abc");
        let mut wide = "ééé".to_string();
        assert!(truncate_encoded(&mut wide, 5));
        assert_eq!(wide, "éé");
    }
}
