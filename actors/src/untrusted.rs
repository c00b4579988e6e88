//! Input from outside that people see or that decoders must not misread: text from machines
//! (user names, the agent's `detail`) made safe to store and show, and the one JSON shape
//! (objects) accepted from them. Re-exported by [`crate::protocol`].

use crate::protocol::{AgentReply, AgentWindow};

/// The most characters of an agent's `detail` that are kept: it is free text from a machine,
/// stored as an event and shown to the operator.
pub const MAX_AGENT_DETAIL_CHARS: usize = 200;

/// What an agent's answer to `open_chat` says about the window, with the detail made safe to
/// store and show ([`clean_text`], at most [`MAX_AGENT_DETAIL_CHARS`]). An unreadable answer
/// is a failure.
pub fn agent_window(payload: &[u8]) -> (AgentWindow, String) {
    if !is_json_object(payload) {
        let detail = "unreadable agent answer: not a JSON object".to_string();
        return (AgentWindow::Failed, detail);
    }
    let (status, detail) = match serde_json::from_slice::<AgentReply>(payload) {
        Ok(r) if r.ok => (AgentWindow::Opened, r.detail),
        Ok(r) => (AgentWindow::Failed, r.detail),
        // serde's message may quote the agent's text: it is bounded like a detail.
        Err(e) => (AgentWindow::Failed, format!("unreadable agent answer: {e}")),
    };
    (status, clean_text(&detail, MAX_AGENT_DETAIL_CHARS))
}

/// Whether a payload is a JSON object (or is not JSON at all, which the decoder then refuses).
/// serde reads a struct from an array of its fields too; input from outside must be an object.
pub fn is_json_object(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// `text` made safe to show: whitespace controls (newlines, tabs) become spaces, other
/// unprintable characters ([`is_unprintable`]) are removed, and at most `max_chars` characters
/// are kept (cut on a character boundary).
pub fn clean_text(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if is_unprintable(c) => None,
            c => Some(c),
        })
        .take(max_chars)
        .collect()
}

/// Whether `c` must not appear in text from outside that people see (a user name, an agent's
/// detail): control characters, and the invisible ones that reorder or hide text (bidi
/// controls, zero-width characters, the byte-order mark).
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_detail_is_cut_to_200_characters_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let body = serde_json::to_vec(&AgentReply {
            ok: true,
            detail: long,
        })
        .unwrap();
        let (status, detail) = agent_window(&body);
        assert_eq!(status, AgentWindow::Opened);
        assert_eq!(detail, "é".repeat(MAX_AGENT_DETAIL_CHARS));
    }

    #[test]
    fn an_agent_detail_loses_its_control_characters() {
        let body =
            br#"{"ok":false,"detail":"could not run\nxdg-open:\u0007\u001b[31m no\u202e such"}"#;
        assert_eq!(
            agent_window(body),
            (
                AgentWindow::Failed,
                "could not run xdg-open:[31m no such".to_string()
            )
        );
    }

    #[test]
    fn an_unreadable_agent_answer_is_a_bounded_failure() {
        let quoted = serde_json::to_vec(&serde_json::json!({"ok": "x".repeat(10_000)})).unwrap();
        let (status, detail) = agent_window(&quoted);
        assert_eq!(status, AgentWindow::Failed);
        assert!(detail.starts_with("unreadable agent answer"), "{detail}");
        assert!(detail.chars().count() <= MAX_AGENT_DETAIL_CHARS);
    }

    #[test]
    fn an_agent_answer_must_be_an_object() {
        assert_eq!(agent_window(br#" {"ok":true}"#).0, AgentWindow::Opened);
        let (status, detail) = agent_window(br#"[true, "opened"]"#);
        assert_eq!(status, AgentWindow::Failed);
        assert_eq!(detail, "unreadable agent answer: not a JSON object");
    }
}
