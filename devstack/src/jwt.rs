//! RS256 JSON Web Tokens, as Cognito user pools issue them, with aws-lc-rs (already in the
//! tree for TLS) rather than a JWT crate.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub struct Signer {
    key: KeyPair,
    kid: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
}

impl Signer {
    pub fn generate() -> Self {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let kid = uuid::Uuid::new_v4().to_string();
        Self { key, kid }
    }

    /// A signer from a key saved by [`Self::to_pkcs8`], so tokens signed before a restart
    /// still verify after it.
    pub fn from_pkcs8(pkcs8: &[u8], kid: String) -> anyhow::Result<Self> {
        let key = KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| anyhow::anyhow!("signing key is not an RSA PKCS#8 key: {e}"))?;
        Ok(Self { key, kid })
    }

    /// The private key, PKCS#8 DER.
    pub fn to_pkcs8(&self) -> Vec<u8> {
        let der: Pkcs8V1Der<'static> = self.key.as_der().expect("RSA key serializes");
        der.as_ref().to_vec()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"kid": self.kid, "alg": "RS256", "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks the signature and returns the claims; the caller checks what they say.
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
        let (header, claims) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
        let header: Value = decode_part(header)?;
        if header["alg"] != "RS256" || header["kid"] != self.kid.as_str() {
            return Err(JwtError::BadSignature);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| JwtError::Malformed)?;
        let public = PublicKeyComponents::<Vec<u8>>::from(self.key.public_key());
        public
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                signing_input.as_bytes(),
                &sig,
            )
            .map_err(|_| JwtError::BadSignature)?;
        decode_part(claims)
    }

    /// The JWKS document that `/{pool}/.well-known/jwks.json` serves.
    pub fn jwks(&self) -> Value {
        let public = self.key.public_key();
        json!({"keys": [{
            "kid": self.kid,
            "alg": "RS256",
            "kty": "RSA",
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        }]})
    }
}

fn decode_part(part: &str) -> Result<Value, JwtError> {
    let raw = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&raw).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_rejects_tampering() {
        let signer = Signer::generate();
        let token = signer.sign(&json!({"sub": "u1", "exp": 10}));
        assert_eq!(signer.verify(&token).unwrap()["sub"], "u1");
        let (head, _) = token.split_once('.').unwrap();
        let forged = format!(
            "{head}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"sub":"u2","exp":10}"#),
            token.rsplit_once('.').unwrap().1
        );
        assert_eq!(signer.verify(&forged), Err(JwtError::BadSignature));
        assert_eq!(
            Signer::generate().verify(&token),
            Err(JwtError::BadSignature)
        );
        assert_eq!(signer.jwks()["keys"][0]["e"], "AQAB");
    }

    #[test]
    fn a_saved_key_verifies_what_the_original_signed() {
        let signer = Signer::generate();
        let token = signer.sign(&json!({"sub": "u1"}));
        let restored = Signer::from_pkcs8(&signer.to_pkcs8(), signer.kid().to_owned()).unwrap();
        assert_eq!(restored.verify(&token).unwrap()["sub"], "u1");
        assert_eq!(restored.jwks(), signer.jwks());
        assert!(Signer::from_pkcs8(b"junk", "k".into()).is_err());
    }
}
