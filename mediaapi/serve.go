package mediaapi

import (
	"mime"
	"strings"
)

// ContentSecurityPolicy is the spec's recommended policy for served media: a
// file opened directly in a browser can run no script and load nothing.
const ContentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// inlineTypes are the content types the spec allows to be served with
// Content-Disposition: inline; everything else is an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// InlineSafe reports whether content of this type may be served inline.
func InlineSafe(contentType string) bool { return inlineTypes[baseType(contentType)] }

// baseType is the lowercased media type without parameters.
func baseType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return strings.ToLower(mt)
}

// ContentDisposition is the Content-Disposition for serving content of
// contentType under filename ("" for none).
func ContentDisposition(contentType, filename string) string {
	disposition := "attachment"
	if InlineSafe(contentType) {
		disposition = "inline"
	}
	if filename == "" {
		return disposition
	}
	if v := mime.FormatMediaType(disposition, map[string]string{"filename": filename}); v != "" {
		return v
	}
	return disposition
}
