//! Starting an agent again by hand, as the provider had started it (same arguments,
//! environment, directory and cgroup leaf), as a reboot or an operator would; the agent this
//! test started is killed by its own pid and reaped when dropped.

use std::path::PathBuf;

/// The command line, environment, directory and cgroup leaf (`/sys/fs/cgroup/...`) of the
/// agent `pid`, as the provider started it.
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub cgroup: Option<PathBuf>,
}

pub fn launch_of(pid: u32) -> Launch {
    let split = |f: &str| -> Vec<String> {
        std::fs::read(format!("/proc/{pid}/{f}"))
            .unwrap()
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let env = split("environ")
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("0::")
                .map(|p| PathBuf::from(format!("/sys/fs/cgroup{p}")))
        })
        .filter(|p| p.join("cgroup.procs").exists());
    Launch {
        argv: split("cmdline"),
        env,
        cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        cgroup,
    }
}

/// An agent this test started again; killed (by its own pid) and reaped when dropped.
pub struct Relaunched(std::process::Child);

impl Drop for Relaunched {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts an agent again as the provider had (same arguments, environment, directory and
/// cgroup leaf), as a reboot or an operator would.
pub fn relaunch(l: &Launch) -> Relaunched {
    use std::os::unix::process::CommandExt;
    // The shell joins the leaf, then becomes the agent.
    let script = match &l.cgroup {
        Some(_) => "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"",
        None => "exec \"$@\"",
    };
    let child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(l.cgroup.clone().unwrap_or_default())
        .args(&l.argv)
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&l.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    Relaunched(child)
}
