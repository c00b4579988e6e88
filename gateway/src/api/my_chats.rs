//! The operator's open chats (B7), kept per operator on the server (KV `natter_open_chats`:
//! username → the session IDs, newest first): a chat window remembers its chat when it opens, so
//! after a browser crash, a reboot or on another device the Chat page offers them again, each a
//! click from its window with the whole retained history.

use async_nats::jetstream::kv;
use natter_actors::protocol::SessionView;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::json_reply;
use crate::Gateway;
use crate::auth::Login;
use crate::error::{ApiError, ErrorKind};

/// How many chats an operator's list keeps (the newest).
const MOST: usize = 50;

/// GET /api/me/chats: the remembered chats as the operator may see them now, newest first;
/// those that are gone (expired, or no longer theirs) are left out and forgotten.
pub async fn list(l: Login, gw: Gateway) -> Result<Response, ApiError> {
    let (ids, _) = read(&gw, &l.who.id).await?;
    // One View each, all at once (not one round trip after the other).
    let answers = futures::future::join_all(ids.iter().map(|id| gw.view_as(id, &l))).await;
    let mut views: Vec<SessionView> = Vec::new();
    let mut gone = Vec::new();
    for (id, answer) in ids.iter().zip(answers) {
        match answer {
            Ok(view) => views.push(view),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Forbidden) => {
                gone.push(id.clone())
            }
            Err(e) => return Err(e),
        }
    }
    if !gone.is_empty() {
        change(&gw, &l.who.id, |ids| ids.retain(|i| !gone.contains(i))).await?;
    }
    Ok(json_reply(StatusCode::OK, &views))
}

/// PUT /api/me/chats/{id}: a window of this chat is open (it goes first in the list). Only a
/// member's chat is remembered.
pub async fn remember(id: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    gw.view_as(&id, &l).await?;
    change(&gw, &l.who.id, |ids| {
        ids.retain(|i| *i != id);
        ids.insert(0, id.clone());
        ids.truncate(MOST);
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// DELETE /api/me/chats/{id}: the operator does not want it offered any more.
pub async fn forget(id: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    change(&gw, &l.who.id, |ids| ids.retain(|i| *i != id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "open chats: storage failed");
    ApiError::unavailable("your open chats could not be read or saved; try again")
}

/// The operator's list and its revision (0: none yet).
async fn read(gw: &Gateway, operator: &str) -> Result<(Vec<String>, u64), ApiError> {
    let entry = gw
        .stores()
        .open_chats
        .entry(operator)
        .await
        .map_err(unavailable)?;
    Ok(match entry {
        Some(e) if e.operation == kv::Operation::Put => (
            serde_json::from_slice(&e.value).unwrap_or_default(),
            e.revision,
        ),
        Some(e) => (Vec::new(), e.revision),
        None => (Vec::new(), 0),
    })
}

/// Applies `edit` to the operator's list (compare-and-set, retried when another window changed
/// it meanwhile).
async fn change(
    gw: &Gateway,
    operator: &str,
    edit: impl Fn(&mut Vec<String>),
) -> Result<(), ApiError> {
    let bucket = &gw.stores().open_chats;
    for _ in 0..5 {
        let (mut ids, revision) = read(gw, operator).await?;
        let before = ids.clone();
        edit(&mut ids);
        if ids == before && revision != 0 {
            return Ok(());
        }
        let json: bytes::Bytes = serde_json::to_vec(&ids).map_err(unavailable)?.into();
        let written = if revision == 0 {
            bucket
                .create(operator, json)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            bucket
                .update(operator, json, revision)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if written.is_ok() {
            return Ok(());
        }
    }
    Err(unavailable("the list kept changing"))
}
