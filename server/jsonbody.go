package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// bodyError is a refused JSON request body: the HTTP status (400, 413, 415) and
// a description for error_description. Each API wraps it in its error shape.
type bodyError struct {
	status int
	desc   string
}

func (e *bodyError) Error() string { return e.desc }

// jsonBody says how decodeJSONBody reads a body.
type jsonBody struct {
	limit     int64 // bytes
	tooLarge  string
	useNumber bool // keep numbers as json.Number (policy inputs)
	// lastField names a mistyped field by its last path element: the bodies of
	// APIs whose fields are all top-level embed Go structs, whose names the path holds.
	lastField bool
}

// decodeJSONBody reads exactly one JSON value of an application/json (UTF-8) body of at
// most o.limit bytes into dst, refusing unknown fields, and says precisely what is wrong.
func decodeJSONBody(c echo.Context, dst any, o jsonBody) *bodyError {
	r := c.Request()
	mt, params, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationJSON {
		return &bodyError{http.StatusUnsupportedMediaType, "Content-Type must be application/json"}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &bodyError{http.StatusUnsupportedMediaType, "the body must be UTF-8 JSON"}
	}
	tooLarge := &bodyError{http.StatusRequestEntityTooLarge, o.tooLarge}
	if r.ContentLength > o.limit {
		return tooLarge
	}
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), r.Body, o.limit))
	dec.DisallowUnknownFields()
	if o.useNumber {
		dec.UseNumber()
	}
	bad := func(format string, args ...any) *bodyError {
		return &bodyError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
	}
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	err = dec.Decode(dst)
	switch {
	case err == nil:
	case errors.As(err, &maxErr):
		return tooLarge
	case errors.Is(err, io.EOF):
		return bad("the body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("malformed JSON: the body ends too early")
	case errors.As(err, &syntaxErr):
		return bad("malformed JSON at byte %d", syntaxErr.Offset)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return bad("the body must be a JSON object")
		}
		field := typeErr.Field
		if o.lastField {
			field = field[strings.LastIndexByte(field, '.')+1:]
		}
		return bad("%s must be %s", field, jsonTypeName(typeErr.Type.String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return bad("unknown field %s", truncateText(strings.TrimPrefix(err.Error(), "json: unknown field ")))
	default:
		return bad("malformed JSON")
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if errors.As(err, &maxErr) {
			return tooLarge
		}
		return bad("the body must hold exactly one JSON value")
	}
	return nil
}

// jsonTypeName says in JSON terms what a Go type of a request field expects.
func jsonTypeName(goType string) string {
	goType = strings.TrimPrefix(goType, "*")
	switch goType {
	case "string":
		return "a string"
	case "int", "int64":
		return "an integer"
	case "bool":
		return "true or false"
	case "[]string":
		return "an array of strings"
	case "map[string]string":
		return "an object of strings"
	}
	if strings.HasPrefix(goType, "[]") {
		return "an array"
	}
	if strings.HasPrefix(goType, "map[") || strings.Contains(goType, ".") {
		return "an object"
	}
	return "of another type"
}

// truncateText bounds an echoed value in an error description.
func truncateText(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
