//! Admin commands for agents' identities: enrollment tokens and forgetting a machine's key
//! (docs/security.md).

use std::time::Duration;

use natter_actors::enrollment::Enrollment;

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
