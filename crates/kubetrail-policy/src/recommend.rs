//! Ready-to-use audit policies for the common needs, each commented rule by rule. The tests
//! load and lint every profile: a recommended policy must pass kubetrail's own lint.

/// A recommended policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Metadata for everything that matters, nothing else: lowest volume.
    Minimal,
    /// Changes with request bodies, credentials never logged: for security investigations.
    Security,
    /// Changes with request and response bodies: for tracing what happened to objects.
    Debugging,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 3] = [Profile::Minimal, Profile::Security, Profile::Debugging];

    /// The profile's name.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Minimal => "minimal",
            Profile::Security => "security",
            Profile::Debugging => "debugging",
        }
    }

    /// The policy, as a commented YAML file.
    pub const fn policy_yaml(self) -> &'static str {
        match self {
            Profile::Minimal => include_str!("profiles/minimal.yaml"),
            Profile::Security => include_str!("profiles/security.yaml"),
            Profile::Debugging => include_str!("profiles/debugging.yaml"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Profile;
    use crate::{lint, load};

    #[test]
    fn every_profile_loads_and_passes_lint() {
        for profile in Profile::ALL {
            let loaded =
                load(profile.policy_yaml()).unwrap_or_else(|e| panic!("{}: {e}", profile.name()));
            assert!(loaded.warnings.is_empty(), "{}", profile.name());
            let findings = lint(&loaded);
            assert!(findings.is_empty(), "{}: {findings:#?}", profile.name());
        }
    }
}
