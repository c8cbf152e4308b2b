module github.com/zdm-io/zdm/cmd/zdm

go 1.26.0

require github.com/peterbourgon/ff/v3 v3.4.0 // indirect
