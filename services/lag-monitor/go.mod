module github.com/zdm-io/zdm/services/lag-monitor

go 1.26.0
