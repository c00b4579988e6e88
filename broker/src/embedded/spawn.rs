//! Starting the nats-server child so that it never outlives the node.
//!
//! `kill -9` of the node runs no destructor, so `kill_on_drop` cannot stop the child; the kernel
//! can: on Linux the child asks for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`). That
//! signal follows the *thread* that forked the child, not the process, so every child is forked
//! by one dedicated thread that is never joined and never returns (it waits on a channel whose
//! sender lives in a static): it lives exactly as long as the process.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct SpawnRequest {
    command: Command,
    /// The caller's runtime: tokio reaps a child through the runtime it was spawned in.
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The spawner thread's queue, or `None` if the thread could not be started.
fn spawner() -> Option<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (requests, queue) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("nats-server-spawner".into())
                .spawn(move || {
                    for mut request in queue {
                        let _runtime = request.runtime.enter();
                        // A panic here would end the thread, and with it every child it forked.
                        let child = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            request.command.spawn()
                        }))
                        .unwrap_or_else(|_| Err(io::Error::other("spawning panicked")));
                        let _ = request.reply.send(child);
                    }
                })
                .ok()
                .map(|_| requests)
        })
        .as_ref()
}

/// Asks the kernel to SIGKILL the child when the spawner thread (hence the node) dies.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec. It only makes the prctl and
    // getppid system calls (async-signal-safe) and builds errors from errno, which allocates
    // nothing, so it cannot deadlock on a lock another thread held at fork time.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have died between fork and prctl: then no signal would ever come.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Spawns `command` so that the child dies with this process. Must be called inside a tokio
/// runtime.
pub async fn spawn_tied(mut command: Command) -> io::Result<Child> {
    die_with_parent(&mut command);
    // A process group of its own: a terminal's Ctrl-C reaches the node only, which drains its
    // connections and then stops the server, instead of the server dying first under it.
    command.process_group(0);
    let queue = spawner().ok_or_else(|| io::Error::other("cannot start the spawner thread"))?;
    let (reply, answer) = oneshot::channel();
    queue
        .send(SpawnRequest {
            command,
            runtime: tokio::runtime::Handle::current(),
            reply,
        })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}
