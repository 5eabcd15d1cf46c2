//! Container image references, normalized the way container runtimes resolve them, so an
//! exemption written `busybox` covers `docker.io/library/busybox:1.36` and `busybox@sha256:…`,
//! and `registry.k8s.io/kube-proxy` covers every tag of it but not `evil.io/kube-proxy`.

use kubetrail_query::wildcard_match;

/// An image reference split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry and path: `docker.io/library/nginx`, `registry.k8s.io/kube-proxy`.
    pub repository: String,
    /// The tag, when written (`1.36`).
    pub tag: Option<String>,
    /// The digest, when written (`sha256:…`).
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalizes a reference: no registry means Docker Hub, and a Docker Hub image
    /// without a path lives under `library/`. Registry host names are lower-cased.
    pub fn parse(image: &str) -> ImageRef {
        let image = image.trim();
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_owned())),
            None => (image, None),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is a registry port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_owned()),
            ),
            None => (name, None),
        };
        let repository = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':']) || first == "localhost" || first == "*" =>
            {
                format!("{}/{rest}", first.to_ascii_lowercase())
            }
            Some(_) => format!("docker.io/{name}"),
            None => format!("docker.io/library/{name}"),
        };
        let repository = match repository.strip_prefix("index.docker.io/") {
            Some(rest) => format!("docker.io/{rest}"),
            None => repository,
        };
        ImageRef {
            repository,
            tag,
            digest,
        }
    }

    /// Whether this image is one `pattern` names: the same repository (a `*` in the pattern
    /// stands for any run of characters), and the same tag or digest when the pattern has one.
    pub fn is(&self, pattern: &ImageRef) -> bool {
        wildcard_match(&pattern.repository, &self.repository)
            && pattern
                .tag
                .as_ref()
                .is_none_or(|tag| self.tag.as_ref() == Some(tag))
            && pattern
                .digest
                .as_ref()
                .is_none_or(|digest| self.digest.as_ref() == Some(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::ImageRef;

    fn check(image: &str, repository: &str, tag: Option<&str>, digest: Option<&str>) {
        let parsed = ImageRef::parse(image);
        assert_eq!(parsed.repository, repository, "{image}");
        assert_eq!(parsed.tag.as_deref(), tag, "{image}");
        assert_eq!(parsed.digest.as_deref(), digest, "{image}");
    }

    #[test]
    fn references_are_normalized() {
        check("busybox", "docker.io/library/busybox", None, None);
        check(
            "busybox:1.36",
            "docker.io/library/busybox",
            Some("1.36"),
            None,
        );
        check(
            "nicolaka/netshoot",
            "docker.io/nicolaka/netshoot",
            None,
            None,
        );
        check(
            "index.docker.io/library/nginx:1",
            "docker.io/library/nginx",
            Some("1"),
            None,
        );
        check(
            "Registry.K8s.io/kube-proxy:v1.36.0",
            "registry.k8s.io/kube-proxy",
            Some("v1.36.0"),
            None,
        );
        check(
            "localhost:5000/tools/debug@sha256:abc",
            "localhost:5000/tools/debug",
            None,
            Some("sha256:abc"),
        );
        check(
            "ghcr.io/org/app:v2@sha256:def",
            "ghcr.io/org/app",
            Some("v2"),
            Some("sha256:def"),
        );
    }

    #[test]
    fn patterns_match_tags_and_digests_they_name() {
        let image = ImageRef::parse("registry.k8s.io/kube-proxy:v1.36.0");
        assert!(image.is(&ImageRef::parse("registry.k8s.io/kube-proxy")));
        assert!(image.is(&ImageRef::parse("registry.k8s.io/*")));
        assert!(image.is(&ImageRef::parse("registry.k8s.io/kube-proxy:v1.36.0")));
        assert!(!image.is(&ImageRef::parse("registry.k8s.io/kube-proxy:v1.35.0")));
        assert!(!image.is(&ImageRef::parse("evil.io/kube-proxy")));
        assert!(ImageRef::parse("busybox:latest").is(&ImageRef::parse("busybox")));
        assert!(!ImageRef::parse("busybox").is(&ImageRef::parse("busybox@sha256:1")));
    }
}
