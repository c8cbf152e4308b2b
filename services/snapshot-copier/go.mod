module github.com/zdm-io/zdm/services/snapshot-copier

go 1.26.0
