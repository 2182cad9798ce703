//! Cognito Identity's JSON 1.1 protocol: `POST /` with `X-Amz-Target:
//! AWSCognitoIdentityService.{GetId,GetCredentialsForIdentity}`, unsigned, as in AWS.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::cognito::{Cognito, IdentityError, unix_secs};
use crate::server::Reply;

pub const TARGET_PREFIX: &str = "AWSCognitoIdentityService.";

fn error(kind: &str, message: &str) -> Reply {
    let mut reply = Reply::json(
        StatusCode::BAD_REQUEST,
        &json!({"__type": kind, "message": message}),
    );
    reply.content_type = "application/x-amz-json-1.1";
    reply.headers.push(("x-amzn-errortype", kind.to_owned()));
    reply
}

fn identity_error(err: IdentityError) -> Reply {
    match err {
        IdentityError::NotAuthorized(m) => error("NotAuthorizedException", &m),
        IdentityError::ResourceNotFound(m) => error("ResourceNotFoundException", &m),
        IdentityError::InvalidParameter(m) => error("InvalidParameterException", &m),
    }
}

pub fn handle(cognito: &Cognito, target: &str, body: &[u8]) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error("SerializationException", "request body is not JSON");
    };
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    let result = match operation {
        "GetId" => {
            let pool = request["IdentityPoolId"].as_str().unwrap_or_default();
            cognito
                .get_id(pool, &request["Logins"])
                .map(|id| json!({"IdentityId": id}))
        }
        "GetCredentialsForIdentity" => {
            let identity_id = request["IdentityId"].as_str().unwrap_or_default();
            cognito
                .credentials_for(identity_id, &request["Logins"])
                .map(|(access_key, c)| {
                    json!({
                        "IdentityId": c.identity_id,
                        "Credentials": {
                            "AccessKeyId": access_key,
                            "SecretKey": c.secret_key,
                            "SessionToken": c.session_token,
                            "Expiration": unix_secs(c.expires),
                        }
                    })
                })
        }
        other => {
            return error(
                "UnknownOperationException",
                &format!("devstack does not implement {other}"),
            );
        }
    };
    match result {
        Ok(v) => {
            tracing::debug!(operation, "identity call answered");
            let mut reply = Reply::json(StatusCode::OK, &v);
            reply.content_type = "application/x-amz-json-1.1";
            reply
        }
        Err(err) => {
            tracing::debug!(operation, ?err, "identity call refused");
            identity_error(err)
        }
    }
}
