//! `credswap get`: one secret for a script.

use std::io::{IsTerminal, Write};

use crate::cli::{Format, GetArgs};
use crate::exit::Failure;
use crate::fields::Content;
use crate::store::{SecretRef, Stores};

/// `value` quoted for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

pub async fn get(args: GetArgs, mut stores: Stores) -> Result<i32, Failure> {
    let secret = SecretRef::parse(&args.secret).map_err(Failure::usage)?;
    let stdout = std::io::stdout();
    if stdout.is_terminal() && !args.reveal {
        return Err(Failure::usage(
            "refusing to print a secret to a terminal: pipe or redirect it, or pass --reveal",
        ));
    }
    let handle = stores.handle(&secret).await?;
    let snapshot = handle.load_full();
    let bytes = snapshot.current().expose_secret();
    let about = |e: String| Failure::data(format!("{} {e}", secret.text));
    let out: Vec<u8> = match (args.format, &args.field) {
        (Format::Raw, None) => bytes.to_vec(),
        (format, field) => {
            let content = Content::parse(bytes)
                .ok_or_else(|| Failure::data(format!("{} is not text", secret.text)))?;
            match (format, field) {
                (Format::Raw, Some(field)) => content.field(field).map_err(about)?.into_bytes(),
                (Format::Json, Some(field)) => {
                    serde_json::Value::String(content.field(field).map_err(about)?)
                        .to_string()
                        .into_bytes()
                }
                (Format::Json, None) => match &content {
                    Content::Json(map) => serde_json::Value::Object(map.clone())
                        .to_string()
                        .into_bytes(),
                    Content::Text(text) => serde_json::Value::String(text.clone())
                        .to_string()
                        .into_bytes(),
                },
                (Format::Env, Some(field)) => {
                    let name = format!(
                        "{}{}",
                        args.prefix,
                        field.to_ascii_uppercase().replace(['.', '-'], "_")
                    );
                    format!(
                        "{name}={}\n",
                        shell_quote(&content.field(field).map_err(about)?)
                    )
                    .into_bytes()
                }
                (Format::Env, None) => {
                    let mut out = String::new();
                    for (name, _, value) in content.flatten(&args.prefix).map_err(about)? {
                        out.push_str(&format!("{name}={}\n", shell_quote(&value)));
                    }
                    out.into_bytes()
                }
                (Format::Raw, None) => bytes.to_vec(),
            }
        }
    };
    let mut lock = stdout.lock();
    lock.write_all(&out)
        .and_then(|()| lock.flush())
        .map_err(|e| Failure::new(crate::exit::SOFTWARE, format!("writing the secret: {e}")))?;
    stores.shutdown(false).await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(super::shell_quote("it's"), r"'it'\''s'");
    }
}
