//! Conditions on a monitor's value: `> 50`, `<= 0.5`, `== 0`. A monitor has an `alert`
//! condition, optionally a weaker `warn` one and a `recover` one (hysteresis: once firing, the
//! alert resolves only when `recover` holds, so a value hovering at the threshold does not flap).

use std::fmt;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// `OP THRESHOLD`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The operator.
    pub op: Op,
    /// The threshold.
    pub threshold: f64,
}

impl Comparison {
    /// Parses `> 50`, `>=0.5`, `== 0`; None with what is wrong.
    pub fn parse(text: &str) -> Result<Comparison, String> {
        let text = text.trim();
        let (op, rest) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .into_iter()
        .find_map(|(symbol, op)| text.strip_prefix(symbol).map(|rest| (op, rest)))
        .ok_or_else(|| {
            format!("{text:?} is not a condition: write an operator and a number, like `> 50`")
        })?;
        // Latency thresholds may be written as durations (`> 1.5s`), compared in µs.
        let threshold: f64 = rest
            .trim()
            .parse()
            .ok()
            .or_else(|| kubetrail_query::parse_duration_micros(rest.trim()).map(|d| d as f64))
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| {
                format!(
                    "{:?} is not a number or a duration (in {text:?})",
                    rest.trim()
                )
            })?;
        Ok(Comparison { op, threshold })
    }

    /// Whether `value` satisfies the comparison.
    pub fn holds(&self, value: f64) -> bool {
        let t = self.threshold;
        match self.op {
            Op::Gt => value > t,
            Op::Ge => value >= t,
            Op::Lt => value < t,
            Op::Le => value <= t,
            Op::Eq => value == t,
            Op::Ne => value != t,
        }
    }

    /// A value satisfying both comparisons, if there is one: an alert condition and a recovery
    /// condition that overlap would resolve an alert that still holds.
    pub fn overlap(&self, other: &Comparison) -> Option<f64> {
        let candidates = [self.threshold, other.threshold];
        let nudged = candidates.iter().flat_map(|t| {
            [
                *t - 1e-9 * t.abs().max(1.0),
                *t,
                *t + 1e-9 * t.abs().max(1.0),
            ]
        });
        let extremes = [
            f64::MIN / 2.0,
            f64::MAX / 2.0,
            (self.threshold + other.threshold) / 2.0,
        ];
        nudged
            .chain(extremes)
            .find(|v| self.holds(*v) && other.holds(*v))
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        };
        write!(f, "{op} {}", self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_hold() {
        let c = Comparison::parse(" > 50").unwrap();
        assert!(c.holds(51.0) && !c.holds(50.0));
        assert!(Comparison::parse("<=0.5").unwrap().holds(0.5));
        assert!(Comparison::parse("== 0").unwrap().holds(0.0));
        assert_eq!(Comparison::parse("> 1.5s").unwrap().threshold, 1_500_000.0);
        assert_eq!(c.to_string(), "> 50");
        for bad in ["50", "> x", "=> 5", "> inf", ""] {
            assert!(Comparison::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlapping_recovery_is_found() {
        let alert = Comparison::parse("> 50").unwrap();
        assert!(alert.overlap(&Comparison::parse("< 40").unwrap()).is_none());
        assert!(
            alert
                .overlap(&Comparison::parse("<= 50").unwrap())
                .is_none()
        );
        assert!(alert.overlap(&Comparison::parse("< 60").unwrap()).is_some());
        assert!(alert.overlap(&Comparison::parse("!= 3").unwrap()).is_some());
        let zero = Comparison::parse("== 0").unwrap();
        assert!(zero.overlap(&Comparison::parse("> 0").unwrap()).is_none());
    }
}
