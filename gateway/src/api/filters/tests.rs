//! The filters as a browser meets them: status and `{error, message}` body, no server, no NATS.

use bytes::Bytes;
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
    guarded_post_for(None)
}

/// [`guarded_post`] of a gateway whose public URL is `public`.
fn guarded_post_for(
    public: Option<&str>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let public = public.map(|p| PublicOrigin::parse(p).expect("a public URL"));
    let limits = Arc::new(Limits::new(Default::default()));
    host(public.clone(), limits.clone())
        .and(warp::post())
        .and(csrf(public))
        .and(json_body::<Greeting>(limits))
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

#[tokio::test]
async fn json_body_refuses_arrays_and_other_non_objects() {
    for body in [r#"["hi"]"#, r#""hi""#, "42", "null", " \n[\"hi\"]"] {
        let res = json_post().body(body).reply(&guarded_post()).await;
        assert_eq!(
            error_of(&res),
            (StatusCode::BAD_REQUEST, "bad_request".into()),
            "{body}"
        );
    }
    let res = json_post()
        .body(" \n{\"text\":\"hi\"}")
        .reply(&guarded_post())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_a_public_url_the_host_must_name_it() {
    let routes = guarded_post_for(Some("https://natter.example"));
    // `post()` says Host: natter.example:8080, which is not the public origin.
    let res = json_post().body(r#"{"text":"hi"}"#).reply(&routes).await;
    assert_eq!(
        error_of(&res),
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );

    let res = json_post()
        .header("host", "natter.example")
        .body(r#"{"text":"hi"}"#)
        .reply(&routes)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_a_public_url_the_origin_must_be_it_even_if_the_host_agrees() {
    let routes = guarded_post_for(Some("https://natter.example"));
    let post_from = |origin: &'static str| {
        json_post()
            .header("host", "natter.example")
            .header("origin", origin)
            .body(r#"{"text":"hi"}"#)
    };
    let res = post_from("https://natter.example").reply(&routes).await;
    assert_eq!(res.status(), StatusCode::OK);
    for foreign in ["http://natter.example", "https://evil.example", "null"] {
        let res = post_from(foreign).reply(&routes).await;
        assert_eq!(
            error_of(&res),
            (StatusCode::FORBIDDEN, "forbidden".into()),
            "{foreign}"
        );
    }
}

#[tokio::test]
async fn a_loopback_public_url_accepts_the_other_loopback_names() {
    let routes = guarded_post_for(Some("http://127.0.0.1:8080"));
    let res = json_post()
        .header("host", "localhost:8080")
        .header("origin", "http://localhost:8080")
        .body(r#"{"text":"hi"}"#)
        .reply(&routes)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = json_post()
        .header("host", "rebound.example:8080")
        .body(r#"{"text":"hi"}"#)
        .reply(&routes)
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_rate_limited_answer_says_when_to_retry() {
    let routes = warp::any()
        .and_then(|| async {
            let e = ApiError::new(ErrorKind::RateLimited, "too many login attempts")
                .retry_after(std::time::Duration::from_millis(2300));
            Err::<Response, _>(reject(e))
        })
        .recover(recover)
        .unify();
    let res = warp::test::request().reply(&routes).await;
    assert_eq!(
        error_of(&res),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    assert_eq!(res.headers()["retry-after"], "3");
}

#[tokio::test]
async fn the_client_address_is_the_one_the_server_tagged() {
    let routes = client_addr().map(|ip: Option<IpAddr>| format!("{ip:?}").into_response());
    let res = warp::test::request()
        .extension(ClientAddr(IpAddr::from([10, 1, 2, 3])))
        .reply(&routes)
        .await;
    assert_eq!(res.body().as_ref(), b"Some(10.1.2.3)");
}

#[test]
fn cookies_are_secure_when_asked_or_when_the_public_url_is_https() {
    let config = |secure_cookies, url: Option<&str>| crate::GatewayConfig {
        secure_cookies,
        public_origin: url.and_then(PublicOrigin::parse),
        ..Default::default()
    };
    assert!(!config(false, Some("http://127.0.0.1:8080")).cookies_secure());
    assert!(!config(false, None).cookies_secure());
    assert!(config(true, None).cookies_secure());
    assert!(config(false, Some("https://natter.example")).cookies_secure());
    let cookie = crate::auth::login_cookie("natter_op", "t", "/", 60, true);
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    assert!(crate::auth::clear_cookie("natter_op", "/", true).contains("; Secure"));
}
