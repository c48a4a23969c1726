//! Why a request was refused: the denial, its metric reason and its status.

use std::time::Duration;

use crate::hook::HookError;
use crate::jwt::TokenError;
use crate::permission::Action;
use crate::session::SessionError;

/// Why a request was refused. The text is safe to send to the client and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No credentials, and anonymous clients may not do this.
    #[error("authentication required")]
    NoCredentials,
    /// Credentials of a kind nothing is configured to check.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A user name that is not configured.
    #[error("wrong user or password")]
    UnknownUser,
    /// The wrong password (or Digest response) for a user.
    #[error("wrong user or password")]
    WrongPassword,
    /// A Digest response to a nonce that has aged; the client should answer a new challenge.
    #[error("the Digest nonce is stale")]
    StaleNonce,
    /// A token that is not valid.
    #[error("invalid token: {0}")]
    Token(TokenError),
    /// A sign-in session token that is not (or no longer) valid.
    #[error("{0}")]
    Session(SessionError),
    /// Known, but not allowed this.
    #[error("{who} may not {action}{}", stream.as_ref().map(|s| format!(" {s}")).unwrap_or_default())]
    Forbidden {
        /// Who asked.
        who: String,
        /// What.
        action: Action,
        /// On which stream (`node/stream`).
        stream: Option<String>,
    },
    /// Too many failures from this address.
    #[error("too many failed attempts from this address; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// When the address may try again.
        retry_after: Duration,
    },
    /// The HTTP hook refused the credentials.
    #[error("refused by the authentication service")]
    HookRefused,
    /// The HTTP hook gave no answer: nothing can be decided.
    #[error("{0}")]
    Hook(HookError),
}

/// The `reason` label of `mediamesh_auth_denials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenialReason {
    /// [`Denial::NoCredentials`].
    NoCredentials,
    /// [`Denial::Unsupported`].
    Unsupported,
    /// [`Denial::UnknownUser`].
    UnknownUser,
    /// [`Denial::WrongPassword`].
    WrongPassword,
    /// [`Denial::StaleNonce`].
    StaleNonce,
    /// [`Denial::Token`] for an expired token.
    ExpiredToken,
    /// [`Denial::Token`] otherwise.
    InvalidToken,
    /// [`Denial::Forbidden`].
    Forbidden,
    /// [`Denial::RateLimited`].
    RateLimited,
    /// [`Denial::HookRefused`].
    HookRefused,
    /// [`Denial::Hook`], or a JWKS that has never been fetched: the hub could not decide.
    Unavailable,
}

impl DenialReason {
    /// Every reason.
    pub const ALL: [DenialReason; 11] = [
        DenialReason::NoCredentials,
        DenialReason::Unsupported,
        DenialReason::UnknownUser,
        DenialReason::WrongPassword,
        DenialReason::StaleNonce,
        DenialReason::ExpiredToken,
        DenialReason::InvalidToken,
        DenialReason::Forbidden,
        DenialReason::RateLimited,
        DenialReason::HookRefused,
        DenialReason::Unavailable,
    ];

    /// As a metric label.
    pub fn name(self) -> &'static str {
        match self {
            DenialReason::NoCredentials => "no_credentials",
            DenialReason::Unsupported => "unsupported_credentials",
            DenialReason::UnknownUser => "unknown_user",
            DenialReason::WrongPassword => "wrong_password",
            DenialReason::StaleNonce => "stale_nonce",
            DenialReason::ExpiredToken => "expired_token",
            DenialReason::InvalidToken => "invalid_token",
            DenialReason::Forbidden => "forbidden",
            DenialReason::RateLimited => "rate_limited",
            DenialReason::HookRefused => "hook_refused",
            DenialReason::Unavailable => "auth_unavailable",
        }
    }
}

impl Denial {
    /// Its metric reason.
    pub fn reason(&self) -> DenialReason {
        match self {
            Denial::NoCredentials => DenialReason::NoCredentials,
            Denial::Unsupported(_) => DenialReason::Unsupported,
            Denial::UnknownUser => DenialReason::UnknownUser,
            Denial::WrongPassword => DenialReason::WrongPassword,
            Denial::StaleNonce => DenialReason::StaleNonce,
            Denial::Token(TokenError::Expired) => DenialReason::ExpiredToken,
            Denial::Token(TokenError::KeysUnavailable(_)) | Denial::Hook(_) => DenialReason::Unavailable,
            Denial::Token(_) => DenialReason::InvalidToken,
            Denial::Session(SessionError::Expired) => DenialReason::ExpiredToken,
            Denial::Session(SessionError::Random) => DenialReason::Unavailable,
            Denial::Session(_) => DenialReason::InvalidToken,
            Denial::Forbidden { .. } => DenialReason::Forbidden,
            Denial::RateLimited { .. } => DenialReason::RateLimited,
            Denial::HookRefused => DenialReason::HookRefused,
        }
    }

    /// The HTTP (and RTSP) status: 401 (try credentials), 403 (known, not allowed), 429.
    pub fn status(&self) -> u16 {
        match self {
            Denial::Forbidden { .. } => 403,
            Denial::RateLimited { .. } => 429,
            Denial::Hook(_) | Denial::Token(TokenError::KeysUnavailable(_)) | Denial::Session(SessionError::Random) => {
                503
            }
            _ => 401,
        }
    }

    /// Whether it counts against the address's limit: wrong credentials do; asking without
    /// any, a stale nonce or a permission a known client lacks do not.
    pub fn is_failure(&self) -> bool {
        match self {
            Denial::Token(TokenError::KeysUnavailable(_)) | Denial::Session(SessionError::Random) => false,
            d => matches!(
                d,
                Denial::UnknownUser
                    | Denial::WrongPassword
                    | Denial::Token(_)
                    | Denial::Session(_)
                    | Denial::Unsupported(_)
                    | Denial::HookRefused
            ),
        }
    }
}
