//! Logging in and out: operators with a password, machine users with their chat link's token.

use std::net::IpAddr;

use natter_actors::directory;
use natter_actors::machines::Scope;
use natter_actors::protocol::{Participant, ParticipantKind, SessionCommand};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::models::{LoginRequest, OperatorView, TokenRequest};
use super::{json_reply, set_cookie};
use crate::Gateway;
use crate::auth::{self, Login, MACHINE_USER_COOKIE, OPERATOR_COOKIE};
use crate::error::{ApiError, ErrorKind};

/// A precomputed hash to verify against when the username is unknown, so that both failures
/// take the same time.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| directory::hash_password("dummy password for timing").unwrap_or_default())
}

/// POST /api/login
pub async fn login(
    gw: Gateway,
    client: Option<IpAddr>,
    body: LoginRequest,
) -> Result<Response, ApiError> {
    let username = body.username.trim();
    gw.limits().check_login(client, username)?;
    let record = directory::get_operator(&gw.stores().operators, username)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let hash = record
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let password = body.password;
    let ok = gw
        .limits()
        .hashes
        .run(move || directory::verify_password(&password, &hash))
        .await?;
    let Some(record) = record.filter(|_| ok) else {
        return Err(ApiError::new(
            ErrorKind::Unauthenticated,
            "wrong username or password",
        ));
    };
    let login = Login {
        who: Participant {
            kind: ParticipantKind::Operator,
            id: record.username.clone(),
            name: record.name.clone(),
        },
        admin: record.admin,
        session: None,
        scope: record.scope(),
        scopes: record.scopes.clone(),
        epoch: 0,
        key: String::new(),
    };
    let mut r = json_reply(StatusCode::OK, &OperatorView::from(&login));
    set_login_cookie(&gw, &mut r, &login, OPERATOR_COOKIE, "/").await?;
    Ok(r)
}

/// POST /api/logout
pub async fn logout(gw: Gateway, token: Option<String>) -> Result<Response, ApiError> {
    if let Some(t) = token {
        gw.delete_login(&t).await;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    let secure = gw.config().cookies_secure();
    set_cookie(&mut r, &auth::clear_cookie(OPERATOR_COOKIE, "/", secure));
    Ok(r)
}

/// GET /api/me
pub fn me(l: Login) -> Response {
    json_reply(StatusCode::OK, &OperatorView::from(&l))
}

/// POST /m/{id}/api/login. The link's token works once: the login it gives (a cookie for this
/// session and its current epoch) carries the machine user from then on. Every failure is the
/// same 401: a wrong, used or expired token, an ended chat, a session that does not exist.
pub async fn machine_user_login(
    id: String,
    gw: Gateway,
    body: TokenRequest,
) -> Result<Response, ApiError> {
    let invalid = || ApiError::new(ErrorKind::Unauthenticated, "this chat link is not valid");
    if body.token.is_empty() || body.token.len() > 128 {
        return Err(invalid());
    }
    // Made-up session IDs are refused here without a round trip to the session supervisor
    // (which would refuse them too, without starting an actor).
    let known = gw
        .stores()
        .sessions
        .get(&id)
        .await
        .map_err(|_| ApiError::unavailable("could not check the chat link; try again"))?;
    if known.is_none() {
        return Err(invalid());
    }
    let (cookie, view) = match log_in_machine_user(&gw, &id, body.token).await {
        // Gone between the two looks (expired): still the answer to a wrong link.
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(invalid()),
        answer => answer?,
    };
    let mut r = json_reply(StatusCode::OK, &view);
    set_cookie(&mut r, &cookie);
    Ok(r)
}

/// Exchanges a chat link's token for the machine user's login to session `id`: returns the
/// `Set-Cookie` value of its cookie (`natter_mu`, Path=/m/<id>/) and the session as the
/// machine user may read it. Also how the start page logs its user into the chat it started.
pub(super) async fn log_in_machine_user(
    gw: &Gateway,
    id: &str,
    token: String,
) -> Result<(String, Option<natter_actors::protocol::SessionView>), ApiError> {
    let ack = gw
        .command(id, &SessionCommand::MachineLogin { token })
        .await?;
    let who = ack
        .participant
        .ok_or_else(|| ApiError::unavailable("the session did not name the machine user"))?;
    let login = Login {
        who,
        admin: false,
        session: Some(id.to_string()),
        // A machine user is confined to its session by the login itself.
        scope: Scope::All,
        scopes: Vec::new(),
        epoch: ack.epoch.unwrap_or_default(),
        key: String::new(),
    };
    let token = gw.create_login(&login).await?;
    let config = gw.config();
    let cookie = auth::login_cookie(
        MACHINE_USER_COOKIE,
        &token,
        &format!("/m/{id}/"),
        config.login_ttl.as_secs(),
        config.cookies_secure(),
    );
    Ok((cookie, ack.session.map(|v| gw.alias_key().view(v))))
}

/// Stores `login` and sets its cookie on `r`.
async fn set_login_cookie(
    gw: &Gateway,
    r: &mut Response,
    login: &Login,
    cookie: &str,
    path: &str,
) -> Result<(), ApiError> {
    let token = gw.create_login(login).await?;
    let config = gw.config();
    set_cookie(
        r,
        &auth::login_cookie(
            cookie,
            &token,
            path,
            config.login_ttl.as_secs(),
            config.cookies_secure(),
        ),
    );
    Ok(())
}
