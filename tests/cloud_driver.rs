//! The cloud-driver provider through the real binary: `stratus serve` knows `type =
//! "cloud-driver"`, and a deployment file that points a driver's secret at the control
//! plane's own key (to send it to an origin the same file grants) fails its launch naming the
//! refusal, with no request ever reaching that origin and no secret in the output or logs.
//! A tier on the EC2 driver gets an instance from moto's EC2 mock (a stand-in for the cloud
//! API, started by the test on a loopback port) whose user-data is the server's bootstrap,
//! and terminate ends it through the handle the journal kept. (Moto boots nothing: the launch
//! fails at the tier's short boot timeout; tests/ec2_end_to_end.rs plays the hypervisor.)

use crate::common;

use base64::Engine as _;
use common::moto::{Moto, ec2_provider, provider_table, tag};
use common::{Stratus, assert_no_secret_leaked, hello_on, terminate};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// The hello example with its app tier on `[providers.ec2]`, a cloud-driver provider granted
/// `origin`, whose secret access key is the key `secret_key`.
fn hello_on_ec2(name: &str, origin: &str, secret_key: &str) -> String {
    let driver = stratus_plugin_artifacts::package_dir("ec2-driver");
    let settings = ec2_provider(origin, &driver, secret_key);
    hello_on(
        name,
        "ec2",
        &provider_table("ec2", "cloud-driver", &settings),
    )
}

#[test]
fn a_driver_is_never_handed_the_control_planes_own_key() {
    let st = Stratus::new();
    // Where a hostile file would have the token sent; the test watches for any connection.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    sink.set_nonblocking(true).unwrap();
    let origin = format!("http://{}", sink.local_addr().unwrap());
    let text = hello_on_ec2("cloudy", &origin, "control-token");
    let file = st.write_file("cloudy.toml", &text);
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let shown = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        st.ok(&["events"])
    );
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains(
            "cannot read key `control-token` from key management: it is the control \
             plane's own key, which no driver is given"
        ),
        "{shown}"
    );
    assert!(
        matches!(sink.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the driver reached the origin"
    );
    // The local tiers that did start end; nothing of the deployment is left running.
    terminate(&st, "cloudy");
    assert_no_secret_leaked(&st, |_| true);
}

#[test]
fn a_tier_on_the_ec2_driver_gets_an_instance_booting_its_bootstrap() {
    let st = Stratus::new();
    let moto = Moto::start();
    let keys = st.dir().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("aws-secret"), "stratus-test-secret-0123456789").unwrap();
    let origin = moto.origin();
    // Moto boots nothing (tests/ec2_end_to_end.rs plays the hypervisor), so no agent ever
    // dials: the tier's boot timeout ends the launch in seconds, not the default minute.
    let text = hello_on_ec2("ec2", &origin, "aws-secret").replace(
        "provider = \"ec2\"\n",
        "provider = \"ec2\"\nboot-timeout = \"3s\"\n",
    );
    let file = st.write_file("ec2.toml", &text);
    let mut launch = st.launch_in_background(&file);
    let deadline = Instant::now() + Duration::from_secs(60);
    let described = loop {
        let d = moto.ec2("Action=DescribeInstances");
        if d.contains("<instanceId>") {
            break d;
        }
        assert!(Instant::now() < deadline, "no instance on moto: {d}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let id = tag(&described, "instanceId").unwrap().to_owned();
    assert!(
        described.contains("<value>ec2-app-1</value>"),
        "{described}"
    );
    let user_data = moto.ec2(&format!(
        "Action=DescribeInstanceAttribute&InstanceId={id}&Attribute=userData"
    ));
    let encoded = tag(&user_data, "value")
        .expect(&user_data)
        .trim()
        .to_owned();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let bootstrap: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(bootstrap["deployment"], "ec2", "{bootstrap}");
    assert_eq!(bootstrap["server_id"], "app-1", "{bootstrap}");
    // The cloud gives the address at boot: the agent learns it from its connection.
    assert_eq!(bootstrap["address"], "", "{bootstrap}");
    assert!(
        bootstrap["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("sha256:")),
        "{bootstrap}"
    );
    assert!(
        bootstrap["credential"]
            .as_str()
            .is_some_and(|c| c.len() >= 16),
        "{bootstrap}"
    );

    let app = common::servers(&st.deployment("ec2"), "app");
    assert_eq!(app[0]["provider"], "ec2", "{}", app[0]);
    assert!(!launch.wait().unwrap().success(), "no agent ever dialled");
    let failed = st.deployment("ec2");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not connect within 3 s")),
        "{failed}"
    );
    terminate(&st, "ec2");
    let after = moto.ec2(&format!("Action=DescribeInstances&InstanceId.1={id}"));
    assert!(after.contains("<name>terminated</name>"), "{after}");
    assert_no_secret_leaked(&st, |_| true);
}
