//! Admin commands for agents' identities: enrollment tokens and forgetting a machine's key
//! (docs/security.md).

use std::time::Duration;

use natter_actors::enrollment::{Enrollment, TokenRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Issues a token and prints it (alone on stdout, so scripts can capture it).
pub async fn enroll_token(
    client: &async_nats::Client,
    replicas: usize,
    group: &str,
    uses: u32,
    ttl: Duration,
) -> Result<(), BoxError> {
    let enrollment = Enrollment::ensure_replicated(client.clone(), replicas).await?;
    let token = enrollment.issue_token(group, uses, ttl).await?;
    eprintln!(
        "enrollment token for {group}: {uses} use(s), valid for {}",
        humantime::format_duration(ttl)
    );
    println!("{token}");
    Ok(())
}

/// Lists the enrollment tokens (id, group, uses, expiry, state), never the tokens themselves.
pub async fn list_tokens(client: &async_nats::Client, replicas: usize) -> Result<(), BoxError> {
    let enrollment = Enrollment::ensure_replicated(client.clone(), replicas).await?;
    let tokens = enrollment.tokens().await?;
    if tokens.is_empty() {
        eprintln!("no enrollment tokens");
        return Ok(());
    }
    println!(
        "{:<16}  {:<24}  {:<9}  {:<20}  STATE",
        "ID", "FOR", "USES LEFT", "EXPIRES (UTC)"
    );
    let now = natter_actors::now_ms();
    for t in tokens {
        let r = &t.record;
        let uses = if r.uses > 0 {
            format!("{}/{}", r.uses_left, r.uses)
        } else {
            r.uses_left.to_string()
        };
        let expires = std::time::UNIX_EPOCH + Duration::from_millis(r.expires_at);
        println!(
            "{:<16}  {:<24}  {:<9}  {:<20}  {}",
            t.id,
            r.group,
            uses,
            humantime::format_rfc3339_seconds(expires).to_string(),
            token_state(r, now)
        );
    }
    Ok(())
}

/// Whether a token still enrolls anyone.
fn token_state(r: &TokenRecord, now_ms: u64) -> &'static str {
    if now_ms >= r.expires_at {
        "expired"
    } else if r.uses_left == 0 {
        "used up"
    } else if r.uses_left < r.uses {
        "partly used"
    } else {
        "unused"
    }
}

/// Deletes an enrollment token by its id (or a unique prefix of at least 8 hex digits).
pub async fn revoke_token(
    client: &async_nats::Client,
    replicas: usize,
    id: &str,
) -> Result<(), BoxError> {
    let enrollment = Enrollment::ensure_replicated(client.clone(), replicas).await?;
    let id = enrollment.revoke_token(id).await?;
    println!("enrollment token {id} revoked: it enrolls nobody from now on");
    Ok(())
}

/// Deletes a machine's key binding and asks a node to cut its agent off.
pub async fn forget_key(
    client: &async_nats::Client,
    replicas: usize,
    machine: &str,
) -> Result<(), BoxError> {
    let enrollment = Enrollment::ensure_replicated(client.clone(), replicas).await?;
    let existed = enrollment.forget_key(machine).await?;
    println!(
        "{machine}: {}",
        if existed {
            "key forgotten"
        } else {
            "had no key"
        }
    );
    let cut_off = tokio::time::timeout(
        Duration::from_secs(5),
        natter_actors::revoke::request(client, machine),
    )
    .await;
    match cut_off {
        Ok(Ok(n)) => println!("{machine}: {n} connection(s) cut off"),
        Ok(Err(e)) => eprintln!(
            "natter: no node cut off {machine}'s connection ({e}); it is refused at its next connect"
        ),
        Err(_) => eprintln!("natter: the node did not confirm the cut-off within 5 s"),
    }
    Ok(())
}
