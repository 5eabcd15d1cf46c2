//! Exemptions, compiled: typed keys instead of string wildcards over whole fields, so that an
//! exemption says what it means ("kube-system's controllers", "every container is the
//! kube-proxy image", "health probes") and cannot be widened by accident. The text keys become
//! one search of the query language, evaluated by the same matcher as conditions; images,
//! networks and the authenticated user's kind and service account are checked here.
//!
//! Identity keys judge the authenticated user, who made the request, never the user it
//! impersonates: the query language's `user_kind` and `sa` describe the effective
//! (impersonated) identity, so a person acting `--as` a kube-system controller would otherwise
//! be exempted as that controller by the default exemptions, and evade every rule.

use std::net::IpAddr;
use std::sync::Arc;

use kubetrail_event::{AuditEvent, UserKind};
use kubetrail_query::{
    Expr, Field, Matcher, POD_FIELDS, Pattern, Query, Value, parse, value_of, wildcard_match,
};

use crate::image::ImageRef;
use crate::spec::ExemptionSpec;

/// The user kinds an exemption may name.
const USER_KINDS: &[&str] = &[
    "human",
    "serviceaccount",
    "node",
    "controlplane",
    "anonymous",
    "unauthenticated",
];

/// A compiled exemption: every part must hold.
#[derive(Debug, Clone)]
pub struct Exemption {
    /// What was written, for listings.
    pub spec: Arc<ExemptionSpec>,
    /// The text keys and `query`, as one search.
    matcher: Option<Matcher>,
    /// Every image of the pod spec must be one of these.
    images: Vec<ImageRef>,
    /// A source IP must lie in one of these networks.
    networks: Vec<Network>,
    /// The authenticated user's kind must be one of these.
    user_kinds: Vec<String>,
    /// The authenticated user must be a service account `namespace:name` matching one of these.
    service_accounts: Vec<String>,
}

impl Exemption {
    /// Compiles an exemption; the error says which key is wrong and why.
    pub fn compile(spec: &ExemptionSpec) -> Result<Exemption, String> {
        let mut terms = Vec::new();
        let mut text_key = |field: &str, values: &[String]| {
            if values.is_empty() {
                return Ok(());
            }
            let field = Field::resolve(field, 0).map_err(|e| e.message)?;
            let alternatives: Vec<Expr> = values
                .iter()
                .map(|value| Expr::Match {
                    field: field.clone(),
                    pattern: if value.contains('*') {
                        Pattern::Wildcard(value.clone())
                    } else {
                        Pattern::Exact(value.clone())
                    },
                })
                .collect();
            terms.push(Expr::Or(alternatives));
            Ok::<(), String>(())
        };
        // `user` and `group` are the authenticated user's in the query language too.
        text_key("user", &spec.user)?;
        text_key("group", &spec.group)?;
        text_key("ns", &spec.namespace)?;
        text_key("name", &spec.name)?;
        text_key("cluster", &spec.cluster)?;
        text_key("ua", &spec.user_agent)?;
        for kind in &spec.user_kind {
            if !USER_KINDS.contains(&kind.as_str()) {
                return Err(format!(
                    "user_kind: {kind:?} is not a user kind ({})",
                    USER_KINDS.join(", ")
                ));
            }
        }
        let prefixes: Vec<String> = spec
            .uri_prefix
            .iter()
            .map(|prefix| {
                if prefix.starts_with('/') {
                    Ok(format!("{prefix}*"))
                } else {
                    Err(format!("uri_prefix: {prefix:?} must start with `/`"))
                }
            })
            .collect::<Result<_, _>>()?;
        text_key("uri", &prefixes)?;
        if let Some(query) = &spec.query {
            let parsed = parse(query).map_err(|e| format!("query: {}", e.render(query)))?;
            if !parsed.pipes.is_empty() {
                return Err("query: an exemption is a search only, without `| …`".to_owned());
            }
            terms.extend(parsed.filter);
        }
        let networks = spec
            .source_ip
            .iter()
            .map(|text| {
                Network::parse(text).ok_or_else(|| {
                    format!("source_ip: {text:?} is not an IP address or a network (`10.0.0.0/8`)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if terms.is_empty()
            && spec.image.is_empty()
            && networks.is_empty()
            && spec.user_kind.is_empty()
            && spec.serviceaccount.is_empty()
        {
            return Err("an exemption needs at least one key besides `reason`".to_owned());
        }
        let matcher = if terms.is_empty() {
            None
        } else {
            let query = Query {
                filter: Some(Expr::And(terms)),
                pipes: Vec::new(),
            };
            Some(Matcher::new(&query).map_err(|e| e.message)?)
        };
        Ok(Exemption {
            spec: Arc::new(spec.clone()),
            matcher,
            images: spec.image.iter().map(|i| ImageRef::parse(i)).collect(),
            networks,
            user_kinds: spec.user_kind.clone(),
            service_accounts: spec.serviceaccount.clone(),
        })
    }

    /// Whether `event` is exempt.
    pub fn covers(&self, event: &AuditEvent<'_>, cluster: &str) -> bool {
        if !self.user_kinds.is_empty() {
            // The authenticated user's kind; the event's derived kind is the effective user's,
            // the same unless someone impersonates.
            let kind = match event.impersonated_user {
                None => event.derived.user_kind,
                Some(_) => UserKind::of(&event.user),
            };
            if !self.user_kinds.iter().any(|k| k == kind.as_str()) {
                return false;
            }
        }
        if !self.service_accounts.is_empty() {
            // `system:serviceaccount:NS:NAME` is `NS:NAME` as the key writes it.
            let Some(account) = event
                .user
                .username
                .strip_prefix("system:serviceaccount:")
                .filter(|a| a.contains(':'))
            else {
                return false;
            };
            if !self.service_accounts.iter().any(|pattern| {
                if pattern.contains('*') {
                    wildcard_match(pattern, account)
                } else {
                    pattern == account
                }
            }) {
                return false;
            }
        }
        if let Some(matcher) = &self.matcher
            && !matcher.matches(event, cluster)
        {
            return false;
        }
        if !self.images.is_empty() && !self.every_image_listed(event, cluster) {
            return false;
        }
        self.networks.is_empty()
            || event.source_ips.iter().any(|ip| {
                ip.parse::<IpAddr>()
                    .is_ok_and(|ip| self.networks.iter().any(|n| n.contains(ip)))
            })
    }

    fn every_image_listed(&self, event: &AuditEvent<'_>, cluster: &str) -> bool {
        let image = POD_FIELDS
            .iter()
            .find(|f| f.name == "image")
            .expect("the pod view has images");
        let Value::List(images) = value_of(&Field::Pod(image), event, cluster) else {
            return false;
        };
        !images.is_empty()
            && images.iter().all(|image| {
                let image = ImageRef::parse(image);
                self.images.iter().any(|pattern| image.is(pattern))
            })
    }
}

/// An IP network.
#[derive(Debug, Clone, Copy)]
struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Option<Network> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => {
                (address.parse::<IpAddr>().ok()?, Some(prefix.parse().ok()?))
            }
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(Network { address, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let mask = |bits: u32| -> u128 {
            if self.prefix == 0 {
                0
            } else {
                u128::MAX << (bits - u32::from(self.prefix))
            }
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask(32) as u32;
                u32::from(net) & m == u32::from(ip) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask(128);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Network;

    #[test]
    fn networks() {
        let n = Network::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.2.3.4".parse().unwrap()));
        assert!(!n.contains("11.2.3.4".parse().unwrap()));
        assert!(
            Network::parse("192.0.2.7")
                .unwrap()
                .contains("192.0.2.7".parse().unwrap())
        );
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Network::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(Network::parse("10.0.0.0/33").is_none());
        assert!(Network::parse("ten").is_none());
    }
}
