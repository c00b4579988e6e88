//! The UI's files as a browser fetches them.

use natter_system_tests::Scenario;
use reqwest::StatusCode;

/// A UI file has an `ETag`; asked for again with `If-None-Match` naming it, the answer is
/// `304 Not Modified` without the file (the browser keeps its copy); naming another version,
/// the file again. So an operator's next chat window revalidates its modules, not refetches them.
#[tokio::test]
async fn a_ui_file_is_not_sent_again_while_it_is_the_same() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let browser = &system.operator("alice").client;
    let url = system.operator("alice").url("/static/chat.js");
    let first = browser.get(&url).send().await.expect("GET");
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().expect("ASCII").to_string();
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let script = first.bytes().await.expect("body");
    assert!(!script.is_empty());

    for same in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
    ] {
        let again = browser
            .get(&url)
            .header("if-none-match", &same)
            .send()
            .await
            .expect("GET");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{same}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.expect("body").is_empty(), "{same}");
    }

    let stale = browser
        .get(&url)
        .header("if-none-match", "\"an-older-build\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.headers()["etag"], etag.as_str());
    assert_eq!(stale.bytes().await.expect("body"), script);

    // A tag that is not text is no tag: the file.
    let odd = browser
        .get(&url)
        .header(
            "if-none-match",
            reqwest::header::HeaderValue::from_bytes(b"\"\xff\"").expect("a header value"),
        )
        .send()
        .await
        .expect("GET");
    assert_eq!(odd.status(), StatusCode::OK);
    assert_eq!(odd.bytes().await.expect("body"), script);

    // Another file has another tag, and a missing one stays missing.
    let other = browser
        .get(system.operator("alice").url("/static/api.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(other.status(), StatusCode::OK);
    assert_ne!(other.headers()["etag"], etag.as_str());
    let missing = browser
        .get(system.operator("alice").url("/static/nope.js"))
        .header("if-none-match", "*")
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    system.shutdown().await;
}
