//! Access tokens: HS256 JWTs with `sub`, `role`, `exp`, `iat` and `jti`.
//! Every role verifies them the same way; the gateway issues them, and so does
//! `promoctl load` when given the secret (tokens for its generated users).

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use promo_domain::principal::{Principal, Role};
use promo_domain::{DomainError, DomainResult};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: Uuid,
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl_secs: i64,
}

impl JwtKeys {
    pub fn new(secret: &SecretString, access_ttl_secs: i64) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        // Only HS256: tokens with `alg: none` or any other algorithm are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        validation.leeway = 0;
        // Never issued here, but a token that carries `nbf` is held to it.
        validation.validate_nbf = true;
        JwtKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            access_ttl_secs,
        }
    }

    pub fn issue(&self, user_id: Uuid, role: Role) -> DomainResult<String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            role: role.as_str().to_owned(),
            exp: now + self.access_ttl_secs,
            iat: now,
            jti: Uuid::new_v4(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| DomainError::Internal(format!("jwt encode: {e}")))
    }

    pub fn verify(&self, token: &str) -> DomainResult<Principal> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| DomainError::Unauthorized)?;
        let role = Role::parse(&data.claims.role).ok_or(DomainError::Unauthorized)?;
        Ok(Principal {
            user_id: data.claims.sub,
            role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&SecretString::from("x".repeat(32)), 60)
    }

    #[test]
    fn round_trip_and_tampering() {
        let k = keys();
        let id = Uuid::new_v4();
        let t = k.issue(id, Role::Admin).unwrap();
        assert_eq!(k.verify(&t).unwrap().user_id, id);
        // Another valid token's signature on this payload must not verify.
        let other_sig = k.issue(Uuid::new_v4(), Role::Admin).unwrap();
        let (head, _) = t.rsplit_once('.').unwrap();
        let (_, sig) = other_sig.rsplit_once('.').unwrap();
        assert!(k.verify(&format!("{head}.{sig}")).is_err());
        let other = JwtKeys::new(&SecretString::from("y".repeat(32)), 60);
        assert!(other.verify(&t).is_err());
    }

    #[test]
    fn alg_none_and_missing_exp_are_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let now = Utc::now().timestamp();
        let payload = b64.encode(format!(
            r#"{{"sub":"{}","role":"admin","exp":{},"iat":{now},"jti":"{}"}}"#,
            Uuid::new_v4(),
            now + 60,
            Uuid::new_v4()
        ));
        assert!(keys().verify(&format!("{header}.{payload}.")).is_err());
        let claims = serde_json::json!({"sub": Uuid::new_v4(), "role": "user", "iat": now, "jti": Uuid::new_v4()});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret("x".repeat(32).as_bytes()),
        )
        .unwrap();
        assert!(keys().verify(&t).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let k = JwtKeys::new(&SecretString::from("x".repeat(32)), -10);
        let t = k.issue(Uuid::new_v4(), Role::User).unwrap();
        assert!(k.verify(&t).is_err());
    }
}
