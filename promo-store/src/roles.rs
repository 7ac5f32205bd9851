//! The closed set of roles a promod process can run: promod starts them,
//! promoctl's dashboard watches them, by the same names.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Gateway,
    Coupon,
    Point,
    Timesale,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Gateway, Role::Coupon, Role::Point, Role::Timesale];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Coupon => "coupon",
            Role::Point => "point",
            Role::Timesale => "timesale",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gateway" => Ok(Role::Gateway),
            "coupon" => Ok(Role::Coupon),
            "point" => Ok(Role::Point),
            "timesale" => Ok(Role::Timesale),
            other => Err(format!(
                "unknown role `{other}` (expected gateway, coupon, point or timesale)"
            )),
        }
    }
}
