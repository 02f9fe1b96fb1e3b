//! The dashboard: one HTML page, its script and its style sheet, embedded
//! in the binary (no build step, nothing fetched from elsewhere). The page
//! holds no broker data: its script polls `/status`, `/metrics` and
//! `/dlq/page` like any other client, with the token when it has one, so
//! the guard's rules for those routes are the page's rules too.

/// One embedded file and how it is served.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The page's policy: its own script and style only (no inline script, so
/// an injected `<script>` would not run), no framing (clickjacking on the
/// retry and delete buttons), no forms posting elsewhere.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Headers every asset carries besides its content type.
pub const ASSET_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    // The assets change with the binary; a browser asks again each load.
    ("cache-control", "no-cache"),
];

const PAGE: Asset = Asset { content_type: "text/html; charset=utf-8", body: include_str!("index.html") };
const SCRIPT: Asset = Asset { content_type: "text/javascript; charset=utf-8", body: include_str!("app.js") };
const STYLE: Asset = Asset { content_type: "text/css; charset=utf-8", body: include_str!("style.css") };

/// The dashboard's paths: the page at `/` and `/dashboard`, its files
/// under `/dashboard/`. The guard's route table lists the same paths.
pub const ASSETS: [(&str, &Asset); 4] =
    [("/", &PAGE), ("/dashboard", &PAGE), ("/dashboard/app.js", &SCRIPT), ("/dashboard/style.css", &STYLE)];

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, asset)| *asset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        let page = asset("/").unwrap().body;
        assert_eq!(asset("/dashboard"), asset("/"));
        assert!(page.contains(r#"<script src="/dashboard/app.js" defer></script>"#), "{page}");
        assert!(page.contains(r#"<link rel="stylesheet" href="/dashboard/style.css">"#), "{page}");
        for file in [page, asset("/dashboard/app.js").unwrap().body, asset("/dashboard/style.css").unwrap().body] {
            assert!(!file.contains("http://") && !file.contains("https://"), "an external resource in {file}");
        }
        assert!(!page.contains("<script>"), "inline script would be refused by the policy");
        assert_eq!(asset("/dashboard/nope.js"), None);
    }

    #[test]
    fn the_script_never_writes_html_from_data() {
        let script = asset("/dashboard/app.js").unwrap().body;
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!script.contains(sink), "app.js uses {sink}: values must go in as text");
        }
    }
}
