//! Child processes of the local stack that cannot outlive it: each runs in its own process
//! group (so its own children are stopped with it) and asks the kernel to signal it if the
//! thread that started it goes away.

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct ManagedChild {
    name: String,
    child: Child,
}

impl ManagedChild {
    /// Starts `command`, sending its output to `log` (or inheriting ours when `None`).
    pub fn spawn(name: &str, mut command: Command, log: Option<&Path>) -> Result<Self> {
        match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let err = file.try_clone()?;
                command.stdout(Stdio::from(file)).stderr(Stdio::from(err));
            }
            None => {
                command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
        }
        command.stdin(Stdio::null()).process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure touches no shared state.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How many processes it started that are still alive.
    pub fn children(&self) -> usize {
        let pid = self.child.id().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            // Fields after the parenthesised command name: state, then the parent pid.
            .filter(|stat| {
                let Some((_, rest)) = stat.rsplit_once(')') else { return false };
                let mut fields = rest.split_whitespace();
                let (state, ppid) = (fields.next(), fields.next());
                // Zombies (exited, not yet reaped) do not count as running.
                ppid == Some(pid.as_str()) && !matches!(state, Some("Z" | "X"))
            })
            .count()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the whole process group: TERM, a grace period, then KILL.
    pub fn stop(&mut self) {
        if !self.running() {
            return;
        }
        let pgid = self.child.id() as i32;
        // SAFETY: plain kill(2) on the group we created.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        for _ in 0..50 {
            if !self.running() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        tracing::debug!(name = %self.name, "stopped");
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.stop();
    }
}
