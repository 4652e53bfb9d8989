//! Which versions of the `stratus:plugin` WIT package this host runs plugins for.
//!
//! The package follows the Component Model's semantic-versioning rules, which wasmtime's
//! linker applies: while the major number is 0, the middle number is the compatibility line
//! (0.1.x) and the last number counts additions. A host offering 0.1.1 runs plugins built
//! against 0.1.0 and 0.1.1; a plugin built against 0.2.0, 1.0.0 or a newer 0.1.x is refused
//! before it is linked, with a message naming both versions.

use std::fmt;

/// The version of `wit/` this host implements.
pub const HOST_WIT_VERSION: WitVersion = WitVersion {
    major: 0,
    minor: 1,
    patch: 1,
};

/// The interfaces of the package start with this.
const PACKAGE: &str = "stratus:plugin/";

/// A `major.minor.patch` version of the WIT package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WitVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl fmt::Display for WitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl WitVersion {
    /// Parses `1.2.3`; pre-release and build suffixes are not versions this host offers.
    pub fn parse(text: &str) -> Option<WitVersion> {
        let mut parts = text.split('.').map(|p| p.parse::<u64>().ok());
        let v = WitVersion {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(v)
    }

    /// The semver compatibility line: `1` for 1.x.y, `0.1` for 0.1.x, `0.0.3` for 0.0.3.
    fn line(&self) -> (u64, u64, u64) {
        match (self.major, self.minor) {
            (0, 0) => (0, 0, self.patch),
            (0, minor) => (0, minor, 0),
            (major, _) => (major, 0, 0),
        }
    }

    /// The oldest version on this version's compatibility line.
    fn line_start(&self) -> WitVersion {
        let (major, minor, patch) = self.line();
        WitVersion {
            major,
            minor,
            patch,
        }
    }
}

/// Why a plugin's WIT version cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitVersionError {
    #[error(
        "it was built for stratus:plugin@{found} ({interface}), but this host offers \
         stratus:plugin@{host} and runs plugins built for {oldest} to {host}; rebuild the \
         plugin against the wit/ of this Stratus release"
    )]
    OtherLine {
        interface: String,
        found: WitVersion,
        host: WitVersion,
        oldest: WitVersion,
    },
    #[error(
        "it was built for stratus:plugin@{found} ({interface}), newer than the \
         stratus:plugin@{host} this host offers; upgrade Stratus or rebuild the plugin \
         against {host}"
    )]
    Newer {
        interface: String,
        found: WitVersion,
        host: WitVersion,
    },
    #[error("it names {interface}, whose version `{version}` is not major.minor.patch")]
    Malformed { interface: String, version: String },
}

/// Checks every `stratus:plugin/…@version` name a component imports or exports.
pub fn check<'a>(
    names: impl IntoIterator<Item = &'a str>,
    host: WitVersion,
) -> Result<(), WitVersionError> {
    for name in names {
        let Some(rest) = name.strip_prefix(PACKAGE) else {
            continue;
        };
        let Some((_, version)) = rest.split_once('@') else {
            continue;
        };
        let interface = format!("{PACKAGE}{rest}");
        let found = WitVersion::parse(version).ok_or_else(|| WitVersionError::Malformed {
            interface: interface.clone(),
            version: version.to_owned(),
        })?;
        if found.line() != host.line() {
            return Err(WitVersionError::OtherLine {
                interface,
                found,
                host,
                oldest: host.line_start(),
            });
        }
        if found > host {
            return Err(WitVersionError::Newer {
                interface,
                found,
                host,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> WitVersion {
        WitVersion::parse(text).unwrap()
    }

    #[test]
    fn host_version_is_the_version_of_wit() {
        let host_wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit/host.wit");
        let text = std::fs::read_to_string(host_wit).unwrap();
        let line = format!("package stratus:plugin@{HOST_WIT_VERSION};");
        assert!(text.starts_with(&line), "{host_wit} must start with {line}");
    }

    #[test]
    fn older_and_equal_versions_on_the_line_run() {
        let names = [
            "stratus:plugin/host@0.1.0",
            "stratus:plugin/service-hooks@0.1.1",
            "wasi:cli/environment@0.2.6",
            "stratus:plugin/unversioned",
        ];
        assert_eq!(check(names, v("0.1.1")), Ok(()));
        assert_eq!(check(["a:b/c@1.4.0"], v("1.5.2")), Ok(()));
        assert_eq!(check(["stratus:plugin/x@1.4.0"], v("1.5.2")), Ok(()));
    }

    #[test]
    fn another_line_is_refused_naming_both_versions() {
        let err = check(["stratus:plugin/host@0.2.0"], v("0.1.1")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("built for stratus:plugin@0.2.0 (stratus:plugin/host@0.2.0)")
                && text.contains("offers stratus:plugin@0.1.1")
                && text.contains("built for 0.1.0 to 0.1.1"),
            "{text}"
        );
        assert!(check(["stratus:plugin/host@1.0.0"], v("0.1.1")).is_err());
        assert!(check(["stratus:plugin/host@0.1.0"], v("1.0.0")).is_err());
        assert!(check(["stratus:plugin/host@0.0.1"], v("0.0.2")).is_err());
    }

    #[test]
    fn a_newer_version_on_the_line_is_refused() {
        let err = check(["stratus:plugin/host@0.1.2"], v("0.1.1")).unwrap_err();
        assert!(matches!(err, WitVersionError::Newer { .. }));
        assert!(
            err.to_string()
                .contains("newer than the stratus:plugin@0.1.1")
        );
    }

    #[test]
    fn malformed_versions_are_refused() {
        for bad in ["1.0", "1.0.0-rc1", "x.y.z", "1.0.0.0"] {
            let name = format!("stratus:plugin/host@{bad}");
            assert!(
                matches!(
                    check([name.as_str()], v("0.1.1")),
                    Err(WitVersionError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }
}
