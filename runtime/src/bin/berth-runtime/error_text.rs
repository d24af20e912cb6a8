//! The one line an error prints as: the error and its causes joined by ": ", each cause left
//! out when the text before it already ends with it (the library's error variants show their
//! source in their own message and also expose it as their source, so anyhow's `{:#}` printed
//! it twice: "cgroup: X: Y: X: Y").

pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner failed")]
    struct Inner;

    #[test]
    fn a_cause_the_message_already_shows_is_not_repeated() {
        let e = anyhow::Error::new(Outer(Inner));
        assert_eq!(format!("{e:#}"), "outer: inner failed: inner failed");
        assert_eq!(error_text(&e), "outer: inner failed");
    }

    #[test]
    fn context_and_causes_are_joined() {
        let e = anyhow::Error::new(Inner).context("create container c1");
        assert_eq!(error_text(&e), "create container c1: inner failed");
    }
}
