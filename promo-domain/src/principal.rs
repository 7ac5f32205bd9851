//! Who is acting. The acting user always comes from the verified token; a
//! `user_id` in a request is honoured only for admins.

use crate::{DomainError, DomainResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: Uuid,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> DomainResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(DomainError::Forbidden("admin only".into()))
        }
    }

    /// The user a request acts for: the caller, or `requested` when an admin asks.
    pub fn acting_for(&self, requested: Option<Uuid>) -> DomainResult<Uuid> {
        match requested {
            Some(id) if id != self.user_id => {
                if self.is_admin() {
                    Ok(id)
                } else {
                    Err(DomainError::Forbidden(
                        "user_id is honoured only for admins".into(),
                    ))
                }
            }
            _ => Ok(self.user_id),
        }
    }

    /// Whose rows a listing shows: for an admin, `requested` (`None`: every
    /// user's); for anyone else, their own, and another user's id is
    /// refused as in [`Self::acting_for`].
    pub fn listing_scope(&self, requested: Option<Uuid>) -> DomainResult<Option<Uuid>> {
        if self.is_admin() {
            return Ok(requested);
        }
        self.acting_for(requested).map(Some)
    }

    /// Owner-scoped access: the owner or an admin. Others get 403.
    pub fn require_owner(&self, owner: Uuid) -> DomainResult<()> {
        if self.is_admin() || self.user_id == owner {
            Ok(())
        } else {
            Err(DomainError::Forbidden("not yours".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_cannot_act_for_others() {
        let me = Principal {
            user_id: Uuid::new_v4(),
            role: Role::User,
        };
        assert_eq!(me.acting_for(None).unwrap(), me.user_id);
        assert_eq!(me.acting_for(Some(me.user_id)).unwrap(), me.user_id);
        assert!(me.acting_for(Some(Uuid::new_v4())).is_err());
        let admin = Principal {
            user_id: Uuid::new_v4(),
            role: Role::Admin,
        };
        let other = Uuid::new_v4();
        assert_eq!(admin.acting_for(Some(other)).unwrap(), other);
        assert!(me.require_owner(other).is_err());
        assert!(admin.require_owner(other).is_ok());
    }

    #[test]
    fn listings_are_the_callers_own_unless_an_admin_asks() {
        let me = Principal {
            user_id: Uuid::new_v4(),
            role: Role::User,
        };
        let admin = Principal {
            user_id: Uuid::new_v4(),
            role: Role::Admin,
        };
        let other = Uuid::new_v4();
        assert_eq!(me.listing_scope(None).unwrap(), Some(me.user_id));
        assert_eq!(
            me.listing_scope(Some(me.user_id)).unwrap(),
            Some(me.user_id)
        );
        assert!(me.listing_scope(Some(other)).is_err());
        assert_eq!(admin.listing_scope(None).unwrap(), None);
        assert_eq!(admin.listing_scope(Some(other)).unwrap(), Some(other));
    }
}
