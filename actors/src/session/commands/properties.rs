//! Property tests of message validation: any id and text from a browser.

use super::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any id and text is accepted within the documented bounds or refused as invalid or
    /// too large, never with a panic.
    #[test]
    fn any_message_is_accepted_within_bounds_or_refused(
        client_id in prop_oneof![".{0,70}", "[A-Za-z0-9_-]{1,64}"],
        text in prop_oneof![".{0,40}", "\\PC{0,40}"],
    ) {
        match validate_message(&client_id, &text, 32) {
            Ok(()) => {
                prop_assert!(valid_client_id(&client_id));
                prop_assert!(!text.trim().is_empty() && text.len() <= 32 && !text.contains('\0'));
            }
            Err(e) => prop_assert!(matches!(
                e.kind,
                SessionErrorKind::Invalid | SessionErrorKind::TooLarge
            )),
        }
    }
}
