//! The cloud-driver provider through the real binary: `stratus serve` knows `type =
//! "cloud-driver"`, and a deployment file that points a driver's secret at the control
//! plane's own key (to send it to an origin the same file grants) fails its launch naming the
//! refusal, with no request ever reaching that origin and no secret in the output or logs.
//! (Launching real instances runs against moto in host/plugin-runtime/tests/cloud_driver.rs;
//! an agent starting from an instance's user-data comes with the end-to-end test.)

use crate::common;

use common::{Stratus, assert_no_secret_leaked, hello_deployment, terminate};
use std::net::TcpListener;

#[test]
fn a_driver_is_never_handed_the_control_planes_own_key() {
    let st = Stratus::new();
    // Where a hostile file would have the token sent; the test watches for any connection.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    sink.set_nonblocking(true).unwrap();
    let origin = format!("http://{}", sink.local_addr().unwrap());
    let driver = stratus_plugin_artifacts::package_dir("ec2-driver");
    let text = hello_deployment("cloudy", 1);
    let app = "[tiers.app]\nmin = 1\nmax = 4\nservices = [\"app\"]\n";
    assert!(
        text.contains(app),
        "the example's app tier changed:\n{text}"
    );
    let on = format!("{app}\n[tiers.app.launch]\nprovider = \"ec2\"\n");
    let text = format!(
        "{}\n[providers.ec2]\ntype = \"cloud-driver\"\ndriver = \"{}\"\nhttp = [\"{origin}\"]\n\
         endpoint = \"{origin}\"\nregion = \"us-east-1\"\nimage = \"ami-12c6146b\"\n\
         access-key-id = \"AKIASTRATUSTEST00001\"\nsecret-access-key = \"control-token\"\n",
        text.replace(app, &on),
        driver.display()
    );
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
