//! `cognifs demo DIR`: devstack in-process, a demo user signed in through the same loopback
//! code path as `cognifs login` (the browser is scripted), and a mount — the whole product
//! without an AWS account.

use std::path::PathBuf;

use crate::auth::AuthError;
use crate::config::Profile;

/// A profile pointing at a running devstack.
pub fn profile_for(running: &devstack::Running, config_path: PathBuf) -> Profile {
    let p = &running.profile;
    Profile {
        name: "demo".into(),
        region: p.region.clone(),
        user_pool_id: p.user_pool_id.clone(),
        client_id: p.client_id.clone(),
        domain: p.domain.clone(),
        identity_pool_id: p.identity_pool_id.clone(),
        bucket: p.bucket.clone(),
        bucket_region: p.region.clone(),
        callback_port: p.callback_port,
        mount_point: None,
        prefix_template: crate::config::DEFAULT_PREFIX_TEMPLATE.into(),
        s3_endpoint: Some(p.s3_endpoint.clone()),
        identity_endpoint: Some(p.identity_endpoint.clone()),
        config_path,
    }
}

/// Hidden `<input>`s of the sign-in form, as a browser would submit them.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(
            tag[start..end]
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            (attr(tag, "type")? == "hidden").then_some(())?;
            Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
        })
        .collect()
}

/// Plays the browser: opens the sign-in page, submits the form, follows the redirect to the
/// loopback listener.
pub async fn scripted_sign_in(
    authorize_url: String,
    username: String,
    password: String,
) -> Result<(), AuthError> {
    let location = sign_in_redirect(&authorize_url, username, password).await?;
    reqwest::get(location)
        .await
        .map_err(|e| AuthError::Network(e.to_string()))?;
    Ok(())
}

/// Opens the sign-in page and submits the form; returns where the browser would be sent.
pub async fn sign_in_redirect(
    authorize_url: &str,
    username: String,
    password: String,
) -> Result<String, AuthError> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AuthError::Login(e.to_string()))?;
    let net = |e: reqwest::Error| AuthError::Network(e.to_string());
    let page = http
        .get(authorize_url)
        .send()
        .await
        .map_err(net)?
        .text()
        .await
        .map_err(net)?;
    let mut form = hidden_inputs(&page);
    form.push(("username".into(), username));
    form.push(("password".into(), password));
    let url = url::Url::parse(authorize_url).map_err(|e| AuthError::Login(e.to_string()))?;
    let action = url
        .join("/login")
        .map_err(|e| AuthError::Login(e.to_string()))?;
    let resp = http.post(action).form(&form).send().await.map_err(net)?;
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| {
            AuthError::Login("the sign-in form did not redirect (wrong password?)".into())
        })?
        .to_owned();
    Ok(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_inputs_are_found_and_unescaped() {
        let html = r#"<form><input type="hidden" name="state" value="a&amp;b"><input name="username" value="x"><input type="hidden" name="scope" value="openid email"></form>"#;
        assert_eq!(
            hidden_inputs(html),
            [
                ("state".to_owned(), "a&b".to_owned()),
                ("scope".to_owned(), "openid email".to_owned())
            ]
        );
    }
}
