package definition_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

const schemaBaseURL = "https://github.com/portfolio-counselor/sagamachine/schema/"

// compileSchema compiles schema/saga-definition.schema.json; compiling also
// checks it against the draft 2020-12 meta-schema.
func compileSchema(tb testing.TB) *jsonschema.Schema {
	tb.Helper()
	return compileSchemaFile(tb, "saga-definition.schema.json")
}

// compileSchemaFile compiles one of the schemas of schema/.
func compileSchemaFile(tb testing.TB, name string) *jsonschema.Schema {
	tb.Helper()
	schemaURL := schemaBaseURL + name
	data := readFile(tb, filepath.Join("..", "..", "schema", name))
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		tb.Fatalf("reading the definition schema: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(schemaURL, doc); err != nil {
		tb.Fatalf("adding the definition schema: %v", err)
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		tb.Fatalf("compiling the definition schema: %v", err)
	}
	return sch
}

// validateYAML checks the first YAML document of data against the schema,
// the way an editor's YAML language server does.
func validateYAML(sch *jsonschema.Schema, data []byte) error {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("reading YAML: %w", err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("converting YAML to JSON: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return fmt.Errorf("reading JSON: %w", err)
	}
	return sch.Validate(inst)
}

func TestShippedSagasPassSchemaAndParse(t *testing.T) {
	sch := compileSchema(t)
	files, err := fs.Glob(sagas.FS, "*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("listing sagas.FS: got %v, %v; want yaml files", files, err)
	}
	for _, name := range files {
		t.Run(name, func(t *testing.T) {
			data, err := fs.ReadFile(sagas.FS, name)
			if err != nil {
				t.Fatalf("reading %s: %v", name, err)
			}
			if err := validateYAML(sch, data); err != nil {
				t.Errorf("schema: %v", err)
			}
			if _, problems := definition.Parse(name, data); len(problems) > 0 {
				t.Errorf("Parse:\n%v", problems)
			}
		})
	}
}

func TestValidVariantsPassSchema(t *testing.T) {
	sch := compileSchema(t)
	for name, src := range map[string]string{"small": small, "api start": apiStart} {
		if err := validateYAML(sch, []byte(src)); err != nil {
			t.Errorf("%s definition: %v", name, err)
		}
	}
}

// goodFiles lists the valid test definitions (not shipped).
func goodFiles(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "good", "*.yaml"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("listing testdata/good: got %v, %v; want yaml files", files, err)
	}
	return files
}

func TestGoodFilesPassSchemaAndParse(t *testing.T) {
	sch := compileSchema(t)
	for _, file := range goodFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data := readFile(t, file)
			if err := validateYAML(sch, data); err != nil {
				t.Errorf("schema: %v", err)
			}
			if _, problems := parseFile(t, file); len(problems) > 0 {
				t.Errorf("Parse:\n%v", problems)
			}
		})
	}
}

// TestSchemaDescribesEveryProperty: an editor shows a property's
// description on hover, so every property of the schema has one (directly
// or on the definition it refers to).
func TestSchemaDescribesEveryProperty(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join("..", "..", "schema", "saga-definition.schema.json")), &doc); err != nil {
		t.Fatalf("reading the schema: %v", err)
	}
	defs, _ := doc["$defs"].(map[string]any)
	described := func(v any) bool {
		m, _ := v.(map[string]any)
		if d, _ := m["description"].(string); d != "" {
			return true
		}
		ref, _ := m["$ref"].(string)
		def, _ := defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
		d, _ := def["description"].(string)
		return d != ""
	}
	checked := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if props, ok := v["properties"].(map[string]any); ok {
				for name, p := range props {
					checked++
					if !described(p) {
						t.Errorf("%s.properties.%s has no description", path, name)
					}
				}
			}
			for k, c := range v {
				switch k {
				case "if", "then", "else", "not":
					// constraints on properties declared elsewhere
				default:
					walk(path+"."+k, c)
				}
			}
		case []any:
			for i, c := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), c)
			}
		}
	}
	walk("$", doc)
	if checked < 30 {
		t.Errorf("checked %d properties, want the whole schema (at least 30)", checked)
	}
}

// TestBadFilesAgainstSchema: every bad file says on its first line whether
// the schema can see its mistake ("# schema: rejects") or only the
// validator can ("# schema: accepts"); both claims are checked, so the
// schema neither misses shape mistakes nor rejects good shapes.
func TestBadFilesAgainstSchema(t *testing.T) {
	sch := compileSchema(t)
	for _, file := range badFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data := readFile(t, file)
			first, _, _ := strings.Cut(string(data), "\n")
			var wantReject bool
			switch {
			case strings.HasPrefix(first, "# schema: rejects"):
				wantReject = true
			case strings.HasPrefix(first, "# schema: accepts"):
			default:
				t.Fatalf("first line %q: want `# schema: rejects` or `# schema: accepts`", first)
			}
			err := validateYAML(sch, data)
			if wantReject && err == nil {
				t.Errorf("schema accepted a file marked `schema: rejects`")
			}
			if !wantReject && err != nil {
				t.Errorf("schema rejected a file marked `schema: accepts`: %v", err)
			}
		})
	}
}
