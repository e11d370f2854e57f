package schema

import (
	"embed"
	"io/fs"
)

//go:embed all:migrations
var migrations embed.FS

//go:embed all:openapi
var openapi embed.FS

//go:embed *.json
var jsonSchemas embed.FS

// Migrations returns the migrations of one database, e.g. Migrations("engine/postgres").
func Migrations(dir string) (fs.FS, error) { return fs.Sub(migrations, "migrations/"+dir) }

// OpenAPI returns the OpenAPI document of one service, e.g. OpenAPI("saga-machine.yaml").
func OpenAPI(name string) ([]byte, error) { return openapi.ReadFile("openapi/" + name) }

// JSONSchema returns one JSON Schema document, e.g. JSONSchema("saga-definition.schema.json").
func JSONSchema(name string) ([]byte, error) { return jsonSchemas.ReadFile(name) }
