//! The SSH provider against a lab of real OpenSSH servers (`tests/common/lab.rs`): each host a
//! network namespace with its own addresses, its own sshd and its own view of the remote
//! directory.

use crate::common;

use common::lab::{Lab, leftovers};

/// The lab itself: ssh with its key reaches host 2 in host 2's namespace (its addresses, its
/// own remote directory, unseen by host 1 and the root namespace), a cut host cannot be
/// reached and a restored one can, and after drop no namespace, link or sshd is left.
#[test]
fn lab_hosts_are_separate_machines_reached_over_ssh() {
    let lab = Lab::new(3, 2);
    let marker = lab.remote_dir().join("marker");
    let out = lab.ssh(
        2,
        &format!(
            "ip -o -4 addr show dev eth0; hostname; echo two > {}",
            marker.display()
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for a in lab.host_addresses(2) {
        assert!(text.contains(&format!("inet {a}/24")), "{text}");
    }
    assert!(!text.contains(&format!("inet {}/", lab.host_addresses(1)[0])));
    assert!(text.contains("lab-host-2"), "{text}");
    // The second address of a host is the same machine, pinned in known_hosts too.
    let second = std::process::Command::new("ssh")
        .args(["-i", lab.client_key_path().to_str().unwrap()])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            lab.known_hosts().display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg(format!("root@{}", lab.host_addresses(2)[1]))
        .arg(format!("cat {}", marker.display()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        "two\n",
        "{second:?}"
    );
    assert_eq!(lab.remote_entries(2), [marker.display().to_string()]);
    assert!(
        lab.remote_entries(1).is_empty(),
        "host 1 sees host 2's file"
    );
    assert!(!marker.exists(), "the root namespace sees host 2's file");
    // Hosts reach each other across the bridge (a load balancer reaches its app servers).
    let across = lab.run(
        0,
        &[
            "ssh-keyscan",
            "-T",
            "3",
            &lab.host_addresses(1)[0].to_string(),
        ],
    );
    assert!(
        String::from_utf8_lossy(&across.stdout).contains("ssh-ed25519"),
        "host 0 cannot reach host 1: {across:?}"
    );

    lab.cut(1);
    assert!(!lab.ssh(1, "true").status.success(), "a cut host answers");
    lab.restore(1);
    let back = lab.ssh(1, "true");
    assert!(
        back.status.success(),
        "a restored host does not answer: {back:?}"
    );

    let (netns, links) = lab.names();
    let sshd = lab.sshd_pids();
    drop(lab);
    assert_eq!(leftovers(&netns, &links), Vec::<String>::new());
    for pid in sshd {
        assert!(!common::alive(pid), "sshd {pid} outlived the lab");
    }
}
