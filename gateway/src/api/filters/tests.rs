//! The filters as a browser meets them: status and `{error, message}` body, no server, no NATS.

use serde::Deserialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Reply;

use super::*;

#[derive(Deserialize, Debug, PartialEq)]
struct Greeting {
    text: String,
}

/// A POST route guarded like ours: CSRF check, then a JSON body; echoes the text.
fn guarded_post() -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::post()
        .and(csrf())
        .and(json_body::<Greeting>())
        .map(|g: Greeting| g.text.into_response())
        .recover(recover)
        .unify()
}

fn post() -> warp::test::RequestBuilder {
    warp::test::request()
        .method("POST")
        .path("/")
        .header("host", "natter.example:8080")
}

fn json_post() -> warp::test::RequestBuilder {
    post()
        .header("x-natter", "1")
        .header("content-type", "application/json")
}

/// The status and the `error` field of an answer, after checking it has a `message`.
fn error_of(res: &warp::http::Response<Bytes>) -> (StatusCode, String) {
    let body: Value = serde_json::from_slice(res.body()).expect("a JSON error body");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let kind = body["error"].as_str().expect("an error kind").to_string();
    (res.status(), kind)
}

#[tokio::test]
async fn csrf_needs_the_marker_header() {
    let res = post()
        .header("content-type", "application/json")
        .body(r#"{"text":"hi"}"#)
        .reply(&guarded_post())
        .await;
    assert_eq!(error_of(&res), (StatusCode::FORBIDDEN, "forbidden".into()));

    let res = post()
        .header("x-natter", "yes")
        .header("content-type", "application/json")
        .body(r#"{"text":"hi"}"#)
        .reply(&guarded_post())
        .await;
    assert_eq!(error_of(&res), (StatusCode::FORBIDDEN, "forbidden".into()));
}

#[tokio::test]
async fn csrf_refuses_a_foreign_origin_and_accepts_ours_or_none() {
    let res = json_post()
        .header("origin", "https://evil.example")
        .body(r#"{"text":"hi"}"#)
        .reply(&guarded_post())
        .await;
    assert_eq!(error_of(&res), (StatusCode::FORBIDDEN, "forbidden".into()));

    for origin in ["http://natter.example:8080", "https://natter.example:8080"] {
        let res = json_post()
            .header("origin", origin)
            .body(r#"{"text":"hi"}"#)
            .reply(&guarded_post())
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{origin}");
        assert_eq!(res.body().as_ref(), b"hi");
    }

    let res = json_post()
        .body(r#"{"text":"no origin"}"#)
        .reply(&guarded_post())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.body().as_ref(), b"no origin");
}

#[tokio::test]
async fn json_body_refuses_bodies_over_the_limit() {
    let text = "x".repeat(BODY_LIMIT as usize);
    let res = json_post()
        .body(format!(r#"{{"text":"{text}"}}"#))
        .reply(&guarded_post())
        .await;
    assert_eq!(
        error_of(&res),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into())
    );

    // Over the drain limit warp refuses the body unread; the answer is the same.
    let huge = vec![b' '; BODY_DRAIN_LIMIT as usize + 1];
    let res = json_post().body(huge).reply(&guarded_post()).await;
    assert_eq!(
        error_of(&res),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into())
    );
}

#[tokio::test]
async fn json_body_needs_the_json_content_type() {
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = post().header("x-natter", "1");
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        let res = req.body(r#"{"text":"hi"}"#).reply(&guarded_post()).await;
        assert_eq!(
            error_of(&res),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type".into()
            ),
            "{content_type:?}"
        );
    }
    let res = post()
        .header("x-natter", "1")
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"text":"hi"}"#)
        .reply(&guarded_post())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn json_body_refuses_invalid_utf8_bad_json_and_missing_fields() {
    let bodies: [&[u8]; 4] = [
        b"{\"text\":\"\xff\"}",
        b"{not json",
        br#"{"txt":"hi"}"#,
        b"",
    ];
    for body in bodies {
        let res = json_post().body(body).reply(&guarded_post()).await;
        assert_eq!(
            error_of(&res),
            (StatusCode::BAD_REQUEST, "bad_request".into()),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn recover_answers_unknown_paths_and_wrong_methods_in_json() {
    let routes = warp::path!("only")
        .and(warp::get())
        .map(|| "ok".into_response())
        .recover(recover)
        .unify();
    let res = warp::test::request().path("/nowhere").reply(&routes).await;
    assert_eq!(error_of(&res), (StatusCode::NOT_FOUND, "not_found".into()));
    assert_eq!(res.headers()["content-type"], "application/json");

    let res = warp::test::request()
        .method("DELETE")
        .path("/only")
        .reply(&routes)
        .await;
    assert_eq!(
        error_of(&res),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
}

#[tokio::test]
async fn recover_keeps_our_errors_and_their_session() {
    let routes = warp::any()
        .and_then(|| async {
            let mut e = ApiError::new(ErrorKind::Conflict, "a chat is in progress");
            e.session = Some("01JD0000000000000000000000".into());
            Err::<Response, _>(reject(e))
        })
        .recover(recover)
        .unify();
    let res = warp::test::request().reply(&routes).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "error": "conflict",
            "message": "a chat is in progress",
            "session": "01JD0000000000000000000000",
        })
    );
}

#[tokio::test]
async fn recover_turns_a_bad_query_into_bad_request() {
    #[derive(Deserialize)]
    struct Since {
        #[allow(dead_code)]
        since: u64,
    }
    let routes = warp::query::<Since>()
        .map(|_: Since| "ok".into_response())
        .recover(recover)
        .unify();
    let res = warp::test::request()
        .path("/?since=soon")
        .reply(&routes)
        .await;
    assert_eq!(
        error_of(&res),
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
}

#[tokio::test]
async fn session_id_rejects_what_is_not_a_session_as_not_found() {
    let routes = session_id()
        .map(|id: String| id.into_response())
        .recover(recover)
        .unify();
    let res = warp::test::request()
        .path("/not-a-session")
        .reply(&routes)
        .await;
    assert_eq!(error_of(&res), (StatusCode::NOT_FOUND, "not_found".into()));

    let id = ulid::Ulid::new().to_string();
    let res = warp::test::request()
        .path(&format!("/{id}"))
        .reply(&routes)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.body().as_ref(), id.as_bytes());
}
