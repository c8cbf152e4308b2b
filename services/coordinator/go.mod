module github.com/zdm-io/zdm/services/coordinator

go 1.26.0
