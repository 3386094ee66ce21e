//! Checks HTTP responses against an OpenAPI 3.0 document: the operation the request
//! matched must declare the response's status, its content type and its required
//! headers, and the body must match the declared schema.
//!
//! The schema checker covers the subset of JSON Schema that the inspection API's
//! document uses (`type`, `nullable`, `enum`, `properties`, `required`,
//! `additionalProperties: false`, `items`, `allOf`, `anyOf`, `minimum`, `maximum`,
//! `maxLength`, `format: byte`, `$ref` within the document). Any other keyword fails
//! the check instead of being ignored, so a schema is never checked in part.

use serde_json::Value;

use crate::HttpResponse;

/// Keywords that only annotate a schema.
const ANNOTATIONS: &[&str] = &["description", "default", "example", "title"];

/// An OpenAPI 3.0 document to check responses against.
#[derive(Debug, Clone)]
pub struct OpenApi {
    document: Value,
}

impl OpenApi {
    /// Wraps a parsed document.
    pub fn new(document: Value) -> Self {
        Self { document }
    }

    /// The document.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Checks `response` to `method path` (the path as sent, query included) against the
    /// document: the path and method are declared, the status is one of the operation's
    /// responses, the content type is one it declares, required headers are present and
    /// match their schemas, and the body matches the content's schema (a text body is
    /// checked as a JSON string).
    pub fn check(&self, method: &str, path: &str, response: &HttpResponse) -> Result<(), String> {
        let what = format!("{method} {path} → {}", response.status);
        self.check_inner(method, path, response)
            .map_err(|error| format!("{what}: {error}; body: {:?}", response.text()))
    }

    fn check_inner(&self, method: &str, path: &str, response: &HttpResponse) -> Result<(), String> {
        let declared = self.response(method, path, response.status)?;
        if let Some(headers) = declared.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let header = self.resolve(header)?;
                let value = response.header(name);
                match value {
                    None if header.get("required") == Some(&Value::Bool(true)) => {
                        return Err(format!("the required header {name} is missing"));
                    }
                    None => {}
                    Some(value) => {
                        if let Some(schema) = header.get("schema") {
                            self.validate(schema, &Value::from(value))
                                .map_err(|error| format!("header {name}: {error}"))?;
                        }
                    }
                }
            }
        }
        let Some(content) = declared.get("content").and_then(Value::as_object) else {
            return if response.body.is_empty() {
                Ok(())
            } else {
                Err("a body where the document declares none".to_owned())
            };
        };
        let content_type = response
            .header("content-type")
            .ok_or("no content-type header")?;
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let media = content.get(&media_type).ok_or_else(|| {
            format!(
                "content-type {content_type:?} is not one of {:?}",
                content.keys().collect::<Vec<_>>()
            )
        })?;
        let Some(schema) = media.get("schema") else {
            return Ok(());
        };
        let body = if media_type == "application/json" {
            serde_json::from_slice(&response.body)
                .map_err(|error| format!("the body is not JSON: {error}"))?
        } else if media_type.starts_with("text/") {
            Value::from(response.text())
        } else {
            return Err(format!("cannot check a {media_type} body"));
        };
        self.validate(schema, &body)
    }

    /// The response object (references resolved) that the operation matching `method`
    /// and `path` declares for `status`, or its `default` response.
    pub fn response(&self, method: &str, path: &str, status: u16) -> Result<&Value, String> {
        let (template, item) = self.path_item(path)?;
        let operation = item
            .get(method.to_ascii_lowercase())
            .ok_or_else(|| format!("{template} declares no {method}"))?;
        let responses = operation
            .get("responses")
            .ok_or_else(|| format!("{method} {template} declares no responses"))?;
        let declared = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .ok_or_else(|| format!("{method} {template} does not declare status {status}"))?;
        self.resolve(declared)
    }

    /// The path template that `path` (query ignored) matches, and its path item. A
    /// template's `{name}` segment matches any one non-empty segment.
    fn path_item(&self, path: &str) -> Result<(&str, &Value), String> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self
            .document
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("the document has no paths")?;
        paths
            .iter()
            .find(|(template, _)| {
                let parts: Vec<&str> = template.split('/').collect();
                parts.len() == segments.len()
                    && parts.iter().zip(&segments).all(|(part, segment)| {
                        if part.starts_with('{') && part.ends_with('}') {
                            !segment.is_empty()
                        } else {
                            part == segment
                        }
                    })
            })
            .map(|(template, item)| (template.as_str(), item))
            .ok_or_else(|| format!("no path of the document matches {path}"))
    }

    /// Follows `$ref`s (`#/…` within the document) until `value` is not one.
    fn resolve<'a>(&'a self, mut value: &'a Value) -> Result<&'a Value, String> {
        // A reference to itself would loop; no sane document nests this deep.
        for _ in 0..32 {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok(value);
            };
            let pointer = reference
                .strip_prefix('#')
                .ok_or_else(|| format!("cannot follow the reference {reference:?}"))?;
            value = self
                .document
                .pointer(pointer)
                .ok_or_else(|| format!("the reference {reference:?} points at nothing"))?;
        }
        Err("too many nested references".to_owned())
    }

    /// Checks `value` against `schema` (an OpenAPI 3.0 schema object of this
    /// document); the error names where in `value` it failed.
    pub fn validate(&self, schema: &Value, value: &Value) -> Result<(), String> {
        self.validate_at(schema, value, "$")
    }

    fn validate_at(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        let keywords = schema
            .as_object()
            .ok_or_else(|| format!("{at}: the schema is not an object"))?;
        let fail = |why: String| Err(format!("{at}: {why} (value {value})"));
        for keyword in keywords.keys() {
            let known = matches!(
                keyword.as_str(),
                "type"
                    | "nullable"
                    | "enum"
                    | "properties"
                    | "required"
                    | "additionalProperties"
                    | "items"
                    | "allOf"
                    | "anyOf"
                    | "minimum"
                    | "maximum"
                    | "maxLength"
                    | "format"
            ) || ANNOTATIONS.contains(&keyword.as_str());
            if !known {
                return fail(format!(
                    "the checker does not support the keyword {keyword:?}"
                ));
            }
        }
        let nullable = schema.get("nullable") == Some(&Value::Bool(true));
        if value.is_null() && nullable {
            return Ok(());
        }
        if let Some(kind) = schema.get("type") {
            let kind = kind.as_str().ok_or("`type` is not a string")?;
            let matches = match kind {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                other => return fail(format!("unknown type {other:?}")),
            };
            if !matches {
                return fail(format!("not of type {kind}"));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return fail(format!("not one of {allowed:?}"));
        }
        if let Some(number) = value.as_f64() {
            if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
                && number < minimum
            {
                return fail(format!("below the minimum {minimum}"));
            }
            if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
                && number > maximum
            {
                return fail(format!("above the maximum {maximum}"));
            }
        }
        if let Some(text) = value.as_str() {
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && text.chars().count() as u64 > max
            {
                return fail(format!("longer than {max} characters"));
            }
            match schema.get("format").and_then(Value::as_str) {
                Some("byte") if !is_base64(text) => return fail("not base64".to_owned()),
                // Other formats (int64, …) only annotate.
                _ => {}
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().ok_or("a `required` entry is not a string")?;
                if !object.contains_key(name) {
                    return fail(format!("the required property {name:?} is missing"));
                }
            }
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            match schema.get("additionalProperties") {
                None | Some(Value::Bool(_)) => {}
                Some(_) => return fail("only a boolean additionalProperties is supported".into()),
            }
            for (name, property) in object {
                match properties.and_then(|properties| properties.get(name)) {
                    Some(property_schema) => {
                        self.validate_at(property_schema, property, &format!("{at}.{name}"))?;
                    }
                    None if closed => return fail(format!("the property {name:?} is not allowed")),
                    None => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (index, item) in array.iter().enumerate() {
                self.validate_at(items, item, &format!("{at}[{index}]"))?;
            }
        }
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.validate_at(part, value, at)?;
        }
        if let Some(choices) = schema.get("anyOf").and_then(Value::as_array) {
            let errors: Vec<String> = choices
                .iter()
                .filter_map(|choice| self.validate_at(choice, value, at).err())
                .collect();
            if errors.len() == choices.len() {
                return fail(format!("matches none of anyOf: {errors:?}"));
            }
        }
        Ok(())
    }
}

/// Whether `text` is standard base64 with padding.
fn is_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    let body = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    bytes.len().is_multiple_of(4)
        && body
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/'))
}
