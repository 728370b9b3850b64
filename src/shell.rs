//! Runs the commands an operator configures (the alert command, the backup check) with
//! `/bin/sh -c`, bounded in time.
//!
//! A command runs in its own process group, so that one which overruns its time is killed
//! with everything it started (`sh -c 'pgbackrest ... | mail ...'`), not just the shell,
//! which would leave the rest running after the job has exited. Its standard error is the
//! job's: under systemd it lands in the unit's journal next to the job's own entries.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Runs `command` with `input` (if any) on its stdin and its stdout discarded; an error says
/// how it ended when it did not succeed: its exit status, or killed after `timeout`.
pub fn run(command: &str, input: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start /bin/sh")?;
    if let (Some(mut stdin), Some(text)) = (child.stdin.take(), input) {
        let text = text.to_owned();
        // In a thread: a command that does not read a large input must not block the
        // timeout. A command that does not read its input is not an error.
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let status = wait(&mut child, timeout)?;
    if !status.success() {
        bail!("it ended with {status}");
    }
    Ok(())
}

fn wait(child: &mut Child, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for the command")? {
            return Ok(status);
        }
        if started.elapsed() > timeout {
            kill_group(child);
            bail!("killed after {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the command's process group (its id is the shell's, see `process_group(0)`).
fn kill_group(child: &mut Child) {
    if let Ok(group) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_failure_and_input_are_told_apart() {
        let second = Duration::from_secs(10);
        assert!(run("true", None, second).is_ok());
        let error = run("exit 3", None, second).unwrap_err().to_string();
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(run("test \"$(cat)\" = hello", Some("hello"), second).is_ok());
        assert!(run("test \"$(cat)\" = hello", Some("bye"), second).is_err());
    }

    #[test]
    fn an_overrunning_command_is_killed_with_what_it_started() {
        let dir = std::env::temp_dir().join(format!("astegni-shell-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("grandchild.pid");
        // The grandchild writes its pid and sleeps; the shell waits for it.
        let command = format!(
            "sh -c 'echo $$ > {path}; exec sleep 600' & wait",
            path = pid_file.display()
        );
        let error = run(&command, None, Duration::from_secs(2))
            .unwrap_err()
            .to_string();
        assert!(error.contains("killed after"), "{error}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The group was sent SIGKILL before run() returned: the grandchild dies (and,
        // reparented, may stay a zombie until its new parent reaps it).
        let deadline = Instant::now() + Duration::from_secs(10);
        let alive = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().unwrap_or("").chars().next();
            !matches!(state, None | Some('Z'))
        };
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(), "the grandchild {pid} outlived the timeout");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
