package policies

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/util"
)

type kind int

const (
	kindOther kind = iota
	kindRego       // policy: *.rego
	kindTest       // tests: *_test.rego
	kindData       // data: data.json
)

func fileKind(name string) kind {
	base := path.Base(name)
	switch {
	case strings.HasSuffix(base, "_test.rego"):
		return kindTest
	case strings.HasSuffix(base, ".rego"):
		return kindRego
	case base == "data.json":
		return kindData
	}
	return kindOther
}

func checkVersion(v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty version", ErrBundleFile)
	}
	if len(v) > 128 {
		return fmt.Errorf("%w: version longer than 128 bytes", ErrBundleFile)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: version holds %q", ErrBundleFile, r)
		}
	}
	return nil
}

// checkFiles enforces the limits and the naming rules of a bundle.
func checkFiles(files map[string]string) error {
	if len(files) == 0 {
		return fmt.Errorf("%w: no files", ErrBundleFile)
	}
	if len(files) > MaxBundleFiles {
		return fmt.Errorf("%w: %d files, at most %d", ErrBundleLimit, len(files), MaxBundleFiles)
	}
	total := 0
	for name, src := range files {
		total += len(name) + len(src)
		if err := checkPath(name); err != nil {
			return err
		}
		switch fileKind(name) {
		case kindOther:
			if strings.HasSuffix(name, ".json") {
				return fmt.Errorf("%w: %s: only files named data.json hold data", ErrBundleFile, name)
			}
			return fmt.Errorf("%w: %s: a bundle holds only .rego and data.json files", ErrBundleFile, name)
		}
	}
	if total > MaxBundleBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBundleLimit, total, MaxBundleBytes)
	}
	return nil
}

// checkPath accepts clean, relative, slash-separated paths of printable characters.
func checkPath(name string) error {
	switch {
	case name == "", !utf8.ValidString(name):
		return fmt.Errorf("%w: invalid file name %q", ErrBundleFile, name)
	case strings.HasPrefix(name, "/"), strings.Contains(name, `\`),
		path.Clean(name) != name, name == "..", strings.HasPrefix(name, "../"):
		return fmt.Errorf("%w: %q is not a clean relative path", ErrBundleFile, name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: file name %q holds %q", ErrBundleFile, name, r)
		}
	}
	return nil
}

// mergeData places the object in a data.json file at the path of its folder.
func mergeData(root map[string]any, name, src string) error {
	var doc any
	dec := util.NewJSONDecoder(strings.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBundleFile, name, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: %s: data after the JSON object", ErrBundleFile, name)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return fmt.Errorf("%w: %s: want a JSON object", ErrBundleFile, name)
	}
	node := root
	if dir := path.Dir(name); dir != "." {
		for _, seg := range strings.Split(dir, "/") {
			next, ok := node[seg]
			if !ok {
				m := map[string]any{}
				node[seg], node = m, m
				continue
			}
			if node, ok = next.(map[string]any); !ok {
				return fmt.Errorf("%w: %s: data at %s is already set by another data.json", ErrBundleFile, name, dir)
			}
		}
	}
	for k, v := range obj {
		if _, dup := node[k]; dup {
			return fmt.Errorf("%w: %s: key %q is already set by another data.json", ErrBundleFile, name, k)
		}
		node[k] = v
	}
	return nil
}

// LoadDir reads a bundle from a folder, recursively: its .rego files
// (policies and *_test.rego tests) and data.json files, keyed by their path
// relative to dir. Hidden files and folders (".name") and any other file
// (a README, say) are skipped. It stops with ErrBundleLimit as soon as the
// folder holds more than a bundle may.
func LoadDir(dir string) (map[string]string, error) {
	files, err := loadFS(os.DirFS(dir))
	if err != nil {
		return nil, fmt.Errorf("policies: load %s: %w", dir, err)
	}
	return files, nil
}

// LoadFS is LoadDir for an fs.FS.
func LoadFS(fsys fs.FS) (map[string]string, error) {
	files, err := loadFS(fsys)
	if err != nil {
		return nil, fmt.Errorf("policies: load: %w", err)
	}
	return files, nil
}

func loadFS(fsys fs.FS) (map[string]string, error) {
	files := map[string]string{}
	total := 0
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || fileKind(name) == kindOther {
			return nil
		}
		if len(files) == MaxBundleFiles {
			return fmt.Errorf("%w: more than %d files", ErrBundleLimit, MaxBundleFiles)
		}
		// Stat follows symbolic links: a Kubernetes ConfigMap volume holds
		// links into a hidden ..data folder.
		info, err := fs.Stat(fsys, name)
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		if total+int(info.Size()) > MaxBundleBytes {
			return fmt.Errorf("%w: more than %d bytes", ErrBundleLimit, MaxBundleBytes)
		}
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		total += len(name) + len(src)
		if total > MaxBundleBytes {
			return fmt.Errorf("%w: more than %d bytes", ErrBundleLimit, MaxBundleBytes)
		}
		files[name] = string(src)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no .rego files", ErrBundleFile)
	}
	return files, nil
}
