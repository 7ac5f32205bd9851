//! Which of the closed set of roles (`promo_store::roles::Role`) one promod
//! process runs.

pub use promo_store::roles::Role;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A non-empty set of roles, written `gateway,coupon` on the command line and in env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSet(BTreeSet<Role>);

impl Default for RoleSet {
    fn default() -> Self {
        RoleSet(Role::ALL.into_iter().collect())
    }
}

impl RoleSet {
    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

impl FromStr for RoleSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let set = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Role::from_str)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if set.is_empty() {
            return Err("no role given".into());
        }
        Ok(RoleSet(set))
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for RoleSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RoleSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            List(Vec<String>),
        }
        let text = match Repr::deserialize(d)? {
            Repr::Text(t) => t,
            Repr::List(l) => l.join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sets_and_refuses_unknown_roles() {
        let s: RoleSet = "gateway, coupon".parse().unwrap();
        assert!(s.has(Role::Gateway) && s.has(Role::Coupon) && !s.has(Role::Point));
        assert!("gateway,bogus"
            .parse::<RoleSet>()
            .unwrap_err()
            .contains("bogus"));
        assert!("".parse::<RoleSet>().is_err());
        assert_eq!(
            RoleSet::default().to_string(),
            "gateway,coupon,point,timesale"
        );
    }
}
