//! Demo support (cargo feature `demo`): a profile for an in-process devstack, read from the
//! config file devstack writes through [`crate::config::load`] like any user's config, and the
//! scripted browser that signs a user in through the same loopback code path as
//! `cognifs login`. `cognifs demo`, the tests and the bench share both.

use std::path::Path;

use anyhow::Context;

use crate::auth::AuthError;
use crate::config::{self, ConfigSource, Profile};

/// The profile name `cognifs demo` uses.
pub const DEMO_PROFILE: &str = "demo";

/// Has devstack write its config file at `config_path` (profile `[name]`) and loads that
/// profile the way a user's config is loaded (so env overrides apply here too).
pub fn profile_for(
    running: &devstack::Running,
    config_path: &Path,
    name: &str,
) -> anyhow::Result<Profile> {
    running.write_config_as(config_path, name)?;
    config::load(&ConfigSource {
        path: Some(config_path.to_owned()),
        profile: Some(name.to_owned()),
    })
    .with_context(|| {
        format!(
            "loading the devstack profile from {}",
            config_path.display()
        )
    })
}

/// The value of attribute `name` in one HTML tag (double-quoted attributes only), unescaped.
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The insides of the opening tags named `element` (`<input …>`), in document order.
fn tags<'a>(html: &'a str, element: &str) -> Vec<&'a str> {
    let open = format!("<{element} ");
    html.split(open.as_str())
        .skip(1)
        .map(|rest| rest.find('>').map_or(rest, |end| &rest[..end]))
        .map(|tag| tag.trim_end_matches('/'))
        .collect()
}

/// Hidden `<input>`s of the sign-in form, as a browser would submit them.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    tags(html, "input")
        .into_iter()
        .map(|tag| format!(" {tag}"))
        .filter(|tag| attr(tag, "type").as_deref() == Some("hidden"))
        .filter_map(|tag| Some((attr(&tag, "name")?, attr(&tag, "value").unwrap_or_default())))
        .collect()
}

/// The first form's `action`, if it has one.
fn form_action(html: &str) -> Option<String> {
    tags(html, "form")
        .first()
        .and_then(|tag| attr(&format!(" {tag}"), "action"))
}

/// Plays the browser: opens the sign-in page, submits the form, follows the redirect to the
/// loopback listener. Returns the loopback page's status and body.
pub async fn scripted_sign_in(
    authorize_url: &str,
    username: &str,
    password: &str,
) -> Result<(u16, String), AuthError> {
    let location = sign_in_redirect(authorize_url, username, password).await?;
    open(&location).await
}

/// GETs `url` as the browser would after a redirect: the loopback page's status and body.
pub async fn open(url: &str) -> Result<(u16, String), AuthError> {
    let net = |e: reqwest::Error| AuthError::Network(format!("GET {url}: {e}"));
    let page = reqwest::get(url).await.map_err(net)?;
    let status = page.status().as_u16();
    Ok((status, page.text().await.map_err(net)?))
}

/// Opens the sign-in page and submits the form; returns where the browser would be sent.
pub async fn sign_in_redirect(
    authorize_url: &str,
    username: &str,
    password: &str,
) -> Result<String, AuthError> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AuthError::Login(e.to_string()))?;
    let net = |e: reqwest::Error| AuthError::Network(e.to_string());
    let page = http.get(authorize_url).send().await.map_err(net)?;
    let (status, page_url) = (page.status(), page.url().clone());
    let page = page.text().await.map_err(net)?;
    if status != 200 {
        return Err(AuthError::Login(format!(
            "the sign-in page answered {status}: {page}"
        )));
    }
    let mut form = hidden_inputs(&page);
    form.push(("username".into(), username.into()));
    form.push(("password".into(), password.into()));
    let action = page_url
        .join(form_action(&page).as_deref().unwrap_or("/login"))
        .map_err(|e| AuthError::Login(e.to_string()))?;
    let resp = http.post(action).form(&form).send().await.map_err(net)?;
    let status = resp.status();
    match resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
    {
        Some(location) if status.is_redirection() => Ok(location.to_owned()),
        _ => Err(AuthError::Login(format!(
            "the sign-in form answered {status}, not a redirect (wrong password?): {}",
            resp.text().await.unwrap_or_default()
        ))),
    }
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

    #[test]
    fn form_action_is_read() {
        let html = r#"<p>x</p><form method="post" action="/login?a=1&amp;b=2"><input type="hidden" name="s" value="v"/></form>"#;
        assert_eq!(form_action(html).as_deref(), Some("/login?a=1&b=2"));
        assert_eq!(hidden_inputs(html), [("s".to_owned(), "v".to_owned())]);
        assert_eq!(form_action("<form>"), None);
    }
}
