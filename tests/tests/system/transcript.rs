//! Transcript export (`GET /api/sessions/{id}/transcript`): the chat's retained history as text
//! (names, UTC times, every message in order, line breaks kept, markup as text) and as JSON
//! (exactly the events the session's stream carries); only for members; bad formats refused.

use natter_system_tests::*;
use serde_json::Value;

/// GET of a transcript: status, content type, content disposition, body.
async fn export(b: &Browser, path: &str) -> (StatusCode, String, String, String) {
    let r = b.client.get(b.url(path)).send().await.expect("GET");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (status, mime, disposition) = (
        r.status(),
        header("content-type"),
        header("content-disposition"),
    );
    (
        status,
        mime,
        disposition,
        r.text().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_holds_what_both_windows_showed() {
    let system = Scenario::alice_and_carol_on_pc1()
        .scoped_operator("outsider", &["globex"])
        .start()
        .await;
    let alice = system.operator("alice");
    let (id, user) = system.open_chat().await;
    assert_eq!(
        alice.send(&id, "a1", "Hello, <b>carol</b>").await.0,
        StatusCode::CREATED
    );
    let (s, _) = user
        .send_as_machine_user(&id, "u1", "my printer\nis on fire")
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(alice.send(&id, "a2", "on it").await.0, StatusCode::CREATED);

    // What the chat window's stream shows.
    let mut stream = alice.session_events(&id).await;
    let shown = stream.read_messages(3).await;
    assert_eq!(
        texts(&shown),
        ["Hello, <b>carol</b>", "my printer\nis on fire", "on it"]
    );

    // Text: a line per message with the time and the sender's name, in order.
    let path = format!("/api/sessions/{id}/transcript");
    let (s, mime, disposition, text) = export(&alice, &path).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(mime.starts_with("text/plain"), "{mime}");
    assert_eq!(
        disposition,
        format!("attachment; filename=\"chat-pc1.sales.acme-{id}.txt\"")
    );
    assert!(text.contains("chat with pc1.sales.acme"), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": ") && l.contains(" UTC  "))
        .collect();
    let said: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once(" UTC  ").unwrap().1)
        .collect();
    assert_eq!(
        said,
        [
            "alice (operator): Hello, <b>carol</b>",
            "carol: my printer",
            "alice (operator): on it"
        ],
        "{text}"
    );
    assert!(
        text.contains("carol: my printer\n    is on fire\n"),
        "{text}"
    );
    assert!(text.contains("— carol joined"), "{text}");

    // JSON: exactly the events of the stream, with their sequences.
    let (s, mime, _, body) = export(&alice, &format!("{path}?format=json")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mime, "application/json");
    let doc: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc["session"], id.as_str());
    assert_eq!(doc["machine"], "pc1.sales.acme");
    let messages: Vec<(u64, String)> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let streamed: Vec<(u64, String)> = shown
        .iter()
        .filter(|e| e.data["type"] == "message")
        .map(|e| (e.seq(), e.data["text"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(messages, streamed);

    // Bad input and strangers: clear refusals, nothing leaked.
    let (s, _, _, body) = export(&alice, &format!("{path}?format=pdf")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _, _, body) = export(&system.operator("outsider"), &path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!body.contains("printer"), "{body}");
    let (s, _, _, _) = export(&Browser::new(&system.node.base), &path).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _, _) = export(
        &alice,
        "/api/sessions/01JD0000000000000000000000/transcript",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    system.shutdown().await;
}

/// `GET /api/sessions/{id}/events?last=N` (what a chat window shows before the rest of a long
/// history): the newest N events of that session only, in order, exactly as the stream
/// carries them, also when other chats' events lie between them in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_events_come_in_order_and_only_for_members() {
    let system = Scenario::alice_and_carol_on_pc1()
        .machine("pc2.sales.acme", "dave")
        .scoped_operator("outsider", &["globex"])
        .start()
        .await;
    let alice = system.operator("alice");
    let (id, _) = system.open_chat().await;
    let (other, _) = system.open_chat_between("alice", "pc2.sales.acme").await;
    // The two chats' messages interleave in the store, three of the other's to one of this
    // one's: the newest 10 and 25 lie further back than twice their count (the replay widens).
    for i in 0..30 {
        let (s, body) = alice
            .send(&id, &format!("m{i}"), &format!("pc1 #{i}"))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        for k in 0..3 {
            let (s, body) = alice
                .send(&other, &format!("m{i}-{k}"), &format!("pc2 #{i}.{k}"))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{body}");
        }
    }
    let (s, doc) = alice
        .get(&format!("/api/sessions/{id}/transcript?format=json"))
        .await;
    assert_eq!(s, StatusCode::OK);
    // A history's events are the stream's without `session` (the URL's).
    let all = without_session(doc["events"].as_array().expect("events"));

    for n in [1usize, 10, 25] {
        let (s, body) = alice
            .get(&format!("/api/sessions/{id}/events?last={n}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let recent = body["events"].as_array().expect("events");
        assert_eq!(recent[..], all[all.len() - n..], "last={n}");
    }
    // More than the chat holds: all of it. Without `last`: up to 200, so all of it here.
    for query in ["?last=20000", ""] {
        let (s, body) = alice
            .get(&format!("/api/sessions/{id}/events{query}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["events"].as_array().expect("events"), &all, "{query}");
    }
    let texts: Vec<&str> = all.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(texts.len(), 30);
    assert!(texts.iter().all(|t| t.starts_with("pc1 #")), "{texts:?}");

    // Bad input and strangers: clear refusals, nothing leaked.
    for bad in ["0", "20001", "abc", "-1"] {
        let (s, body) = alice
            .get(&format!("/api/sessions/{id}/events?last={bad}"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("1 to 20000"),
            "{body}"
        );
    }
    let (s, body) = system
        .operator("outsider")
        .get(&format!("/api/sessions/{id}/events"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!body.to_string().contains("pc1 #"), "{body}");
    let (s, _) = Browser::new(&system.node.base)
        .get(&format!("/api/sessions/{id}/events"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    system.shutdown().await;
}

/// The chat window's page (`GET /chat/{id}`) has the browser ask for the history and the rest
/// of what the window needs at once (a `Link` header of preloads, docs/api.md); a path that is
/// not a session ID gets the page without one.
#[tokio::test]
async fn the_chat_page_has_the_browser_ask_for_its_history_at_once() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (id, _) = system.open_chat().await;
    let link = |path: String| {
        let alice = &alice;
        async move {
            let r = alice
                .client
                .get(alice.url(&path))
                .send()
                .await
                .expect("GET");
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            r.headers()
                .get("link")
                .map(|v| v.to_str().expect("ASCII").to_string())
        }
    };
    let api = format!("/api/sessions/{id}");
    let expected: Vec<String> = [
        format!("{api}/events?last=20000"),
        format!("{api}/events?last=100"),
        "/api/me".into(),
        "/api/me/options".into(),
        api.clone(),
    ]
    .iter()
    .map(|url| format!("<{url}>; rel=preload; as=fetch; crossorigin"))
    .collect();
    assert_eq!(link(format!("/chat/{id}")).await, Some(expected.join(", ")));
    for odd in ["a%22b", "x%3E%3Cy", "%20", "abc"] {
        assert_eq!(link(format!("/chat/{odd}")).await, None, "{odd}");
    }
    system.shutdown().await;
}

/// A history read again (a window opened again, another member's) is the gateway's kept copy
/// and what came since (gateway/src/history.rs): each event once, in order, the newest last,
/// whether the new events came by the operator or the machine user and among another chat's.
#[tokio::test]
async fn a_history_read_again_has_what_came_since_once_and_in_order() {
    let system = Scenario::alice_and_carol_on_pc1()
        .machine("pc2.sales.acme", "dave")
        .start()
        .await;
    let alice = system.operator("alice");
    let (id, carol) = system.open_chat().await;
    let (other, _) = system.open_chat_between("alice", "pc2.sales.acme").await;
    let history = |n: usize| {
        let (alice, id) = (&alice, &id);
        async move {
            let (s, body) = alice
                .get(&format!("/api/sessions/{id}/events?last={n}"))
                .await;
            assert_eq!(s, StatusCode::OK, "{body}");
            body["events"].as_array().expect("events").clone()
        }
    };
    let transcript = || async {
        let (s, doc) = alice
            .get(&format!("/api/sessions/{id}/transcript?format=json"))
            .await;
        assert_eq!(s, StatusCode::OK);
        without_session(doc["events"].as_array().expect("events"))
    };
    for round in 0..3 {
        for i in 0..4 {
            let (s, body) = alice
                .send(
                    &id,
                    &format!("r{round}-{i}"),
                    &format!("round {round} #{i}"),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{body}");
            let (s, body) = alice
                .send(&other, &format!("o{round}-{i}"), "another chat")
                .await;
            assert_eq!(s, StatusCode::CREATED, "{body}");
        }
        carol
            .send_as_machine_user(&id, &format!("c{round}"), &format!("carol {round}"))
            .await;
        let all = transcript().await;
        assert_eq!(
            history(20000).await,
            all,
            "round {round}: the whole history"
        );
        assert_eq!(
            history(3).await[..],
            all[all.len() - 3..],
            "round {round}: the newest 3"
        );
    }
    let texts: Vec<String> = history(20000)
        .await
        .iter()
        .filter_map(|e| e["text"].as_str().map(str::to_string))
        .collect();
    let mut expected = Vec::new();
    for round in 0..3 {
        expected.extend((0..4).map(|i| format!("round {round} #{i}")));
        expected.push(format!("carol {round}"));
    }
    assert_eq!(texts, expected);
    system.shutdown().await;
}

/// `events` as a history (`GET /api/sessions/{id}/events`) carries them: each without its
/// `session` (a transcript's and the event stream's have it).
fn without_session(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let session = e.as_object_mut().and_then(|o| o.remove("session"));
            assert!(session.is_some(), "a stream event without its session: {e}");
            e
        })
        .collect()
}
