//! The client program behind a request, read from its user agent.
//!
//! client-go builds user agents as `<binary>/<version> (<os>/<arch>) kubernetes/<commit>` and
//! lets programs append `/<component>`. The controller manager appends the service account a
//! controller runs as (`…/system:serviceaccount:kube-system:deployment-controller`) or an
//! internal client name (`…/leader-election`, `…/shared-informers`), which is how operators tell
//! which controller hammers the API server. Other clients (`curl/7.88.1`, `Helm/3.14.0`,
//! `Go-http-client/2.0`) follow the `<name>/<version>` convention; browsers are folded into one
//! name because their user agents say nothing useful about the caller.

use std::fmt;

use crate::derived::slice;
use crate::model::Str;

/// The client program of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client<'a> {
    /// The program, e.g. `kubectl`, `kubelet`, `kube-controller-manager`; `unknown` without a
    /// user agent.
    pub name: Str<'a>,
    /// Its version as written, e.g. `v1.36.2`; may be empty.
    pub version: Str<'a>,
    /// The part of the program that made the call, when the user agent names it: the
    /// controller of the controller manager (`deployment-controller`), or a client name such
    /// as `leader-election`.
    pub component: Option<Str<'a>>,
}

impl<'a> Client<'a> {
    /// Reads the client from a `User-Agent` header value.
    pub fn from_user_agent(user_agent: Option<&Str<'a>>) -> Client<'a> {
        let Some(ua) = user_agent.filter(|ua| !ua.is_empty()) else {
            return Client {
                name: Str::Borrowed("unknown"),
                ..Client::default()
            };
        };
        if ua.starts_with("Mozilla/") {
            return Client {
                name: Str::Borrowed("browser"),
                ..Client::default()
            };
        }
        let product_end = ua.find(' ').unwrap_or(ua.len());
        let product = &ua[..product_end];
        let (name, version) = match product.find('/') {
            Some(slash) => (slice(ua, 0, slash), slice(ua, slash + 1, product_end)),
            None => (slice(ua, 0, product_end), Str::Borrowed("")),
        };
        Client {
            name,
            version,
            component: component_of(ua),
        }
    }

    pub(crate) fn into_owned(self) -> Client<'static> {
        Client {
            name: Str::Owned(self.name.into_owned()),
            version: Str::Owned(self.version.into_owned()),
            component: self.component.map(|c| Str::Owned(c.into_owned())),
        }
    }
}

/// The `/<component>` suffix after `kubernetes/<commit>`, with a service account reduced to its
/// name.
fn component_of<'a>(ua: &Str<'a>) -> Option<Str<'a>> {
    let marker = " kubernetes/";
    let commit_start = ua.find(marker)? + marker.len();
    let suffix_start = commit_start + ua[commit_start..].find('/')? + 1;
    let mut suffix_end = ua.len();
    if ua.ends_with("...TRUNCATED") {
        suffix_end -= "...TRUNCATED".len();
    }
    if suffix_start >= suffix_end {
        return None;
    }
    let suffix = &ua[suffix_start..suffix_end];
    match suffix.strip_prefix("system:serviceaccount:") {
        Some(sa) => {
            let name_start = suffix_end - sa.len() + sa.find(':')? + 1;
            Some(slice(ua, name_start, suffix_end))
        }
        None => Some(slice(ua, suffix_start, suffix_end)),
    }
}

impl Client<'_> {
    /// Writes `name[/component]` (as [`Display`](fmt::Display) does) without the formatting
    /// machinery, which the store paid for on every event it keeps.
    pub fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        out.write_str(&self.name)?;
        if let Some(component) = &self.component {
            out.write_str("/")?;
            out.write_str(component)?;
        }
        Ok(())
    }
}

impl fmt::Display for Client<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Client;
    use std::borrow::Cow;

    fn check(ua: Option<&str>, expected: &str, version: &str) {
        let ua = ua.map(Cow::Borrowed);
        let client = Client::from_user_agent(ua.as_ref());
        assert_eq!(client.to_string(), expected, "{ua:?}");
        assert_eq!(client.version, version, "{ua:?}");
    }

    #[test]
    fn kubernetes_components() {
        check(
            Some(
                "kube-controller-manager/v1.36.2 (linux/amd64) kubernetes/98b3519/system:serviceaccount:kube-system:deployment-controller",
            ),
            "kube-controller-manager/deployment-controller",
            "v1.36.2",
        );
        check(
            Some("kube-scheduler/v1.36.2 (linux/amd64) kubernetes/98b3519/leader-election"),
            "kube-scheduler/leader-election",
            "v1.36.2",
        );
        check(
            Some(
                "hyperkube/v1.15.10 (linux/amd64) kubernetes/059c666/system:serviceaccount:kube-system:generic-garbage-collector",
            ),
            "hyperkube/generic-garbage-collector",
            "v1.15.10",
        );
        check(
            Some("kubectl/v1.17.3 (darwin/amd64) kubernetes/06ad960"),
            "kubectl",
            "v1.17.3",
        );
    }

    #[test]
    fn other_clients() {
        check(Some("curl/7.88.1"), "curl", "7.88.1");
        check(Some("Go-http-client/2.0"), "Go-http-client", "2.0");
        check(Some("Mozilla/5.0 (X11; Linux x86_64)"), "browser", "");
        check(Some("terraform"), "terraform", "");
        check(None, "unknown", "");
        check(Some(""), "unknown", "");
    }

    #[test]
    fn truncated_user_agent_keeps_its_component() {
        check(
            Some("kubelet/v1.36.2 (linux/amd64) kubernetes/98b3519/node-status...TRUNCATED"),
            "kubelet/node-status",
            "v1.36.2",
        );
    }
}
