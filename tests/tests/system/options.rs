//! F12 options per operator (`GET/PUT /api/me/options`): defaults off, saved on the server for
//! that operator only (their other logins see them, other operators do not), bad input refused with
//! nothing lost, and no access without a login or without the CSRF header.

use natter_system_tests::*;
use serde_json::{Value, json};

const OPTIONS: &str = "/api/me/options";

/// A PUT as the web UI sends it (CSRF marker and own origin), with a raw JSON body.
async fn put(b: &Browser, body: &str, csrf: bool) -> (StatusCode, Value) {
    let mut r = b
        .client
        .put(format!("{}{OPTIONS}", b.base))
        .header("content-type", "application/json")
        .header("origin", &b.base)
        .body(body.to_string());
    if csrf {
        r = r.header("x-natter", "1");
    }
    let r = r.send().await.expect("PUT");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn all_off() -> Value {
    json!({"play_tone": false, "auto_close": false,
           "hide_from_operators": false, "hide_from_machine_users": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_saved_per_operator_and_bad_input_changes_nothing() {
    let system = Scenario::new()
        .operator("alice")
        .operator("bob")
        .start()
        .await;
    let alice = system.operator("alice");
    let bob = system.operator("bob");

    // Never saved: every option is off.
    let (s, b) = alice.get(OPTIONS).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, all_off());

    // Saved: the answer and every later read are what was saved; a field left out is off.
    let (s, b) = put(
        &alice,
        r#"{"play_tone": true, "auto_close": true, "hide_from_machine_users": true}"#,
        true,
    )
    .await;
    let saved = json!({"play_tone": true, "auto_close": true,
                       "hide_from_operators": false, "hide_from_machine_users": true});
    assert_eq!((s, &b), (StatusCode::OK, &saved));
    assert_eq!(alice.get(OPTIONS).await, (StatusCode::OK, saved.clone()));

    // Another login of alice (another computer) sees them; bob's stay his own.
    let elsewhere = Browser::new(&system.node.base);
    let (s, _) = elsewhere
        .post(
            "/api/login",
            &json!({"username": "alice", "password": operator_password("alice")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        elsewhere.get(OPTIONS).await,
        (StatusCode::OK, saved.clone())
    );
    assert_eq!(bob.get(OPTIONS).await, (StatusCode::OK, all_off()));

    // Bad input: a clear 400 and the saved options unchanged.
    for bad in [
        r#"{"play_tone": "yes"}"#,
        r#"{"play_tone": true, "volume": 11}"#,
        r#"[true]"#,
        r#"{not json"#,
    ] {
        let (s, b) = put(&alice, bad, true).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_eq!(b["error"], "bad_request", "{b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    }
    // Without the CSRF header: refused, unchanged.
    let (s, b) = put(&alice, r#"{}"#, false).await;
    assert_eq!(
        (s, &b["error"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    assert_eq!(alice.get(OPTIONS).await, (StatusCode::OK, saved));

    // Without a login: 401, reading or writing.
    let anonymous = Browser::new(&system.node.base);
    assert_eq!(anonymous.get(OPTIONS).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        put(&anonymous, "{}", true).await.0,
        StatusCode::UNAUTHORIZED
    );
    system.shutdown().await;
}
