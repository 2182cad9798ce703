//! Sign-in and credentials: the loopback login (`login`), the token file and refresh grant
//! (`tokens`), and the Cognito Identity exchange with background renewal (`identity`).

pub mod identity;
pub mod keyring;
pub mod lifetime;
pub mod login;
pub mod tokens;

/// Errors of the sign-in layer. Messages never carry a token or key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("not signed in (profile {profile}): run `cognifs login{}`", profile_flag(.profile))]
    NotSignedIn { profile: String },
    #[error("the sign-in of profile {profile} has expired or was revoked: run `cognifs login{}`", profile_flag(.profile))]
    SignedOut { profile: String },
    #[error("{0}")]
    Insecure(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Token(String),
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Identity(String),
    #[error("{0}")]
    Login(String),
    #[error("{0}")]
    Io(String),
}

/// ` --profile NAME` for any profile but the default, so hints can be pasted as they are.
pub fn profile_flag(profile: &str) -> String {
    if profile == crate::config::DEFAULT_PROFILE {
        String::new()
    } else {
        format!(" --profile {profile}")
    }
}
