import Darwin
import Foundation
import os

/// What the phone says about this process's memory while it trains: the footprint iOS charges the
/// app for (`task_info` `phys_footprint`, the number jetsam kills on) and what the app may still
/// allocate before it is killed (`os_proc_available_memory`, iOS 13+).
enum Memory {
    static func footprintBytes() -> UInt64? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size)
        let result = withUnsafeMutablePointer(to: &info) {
            $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) { task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count) }
        }
        return result == KERN_SUCCESS ? info.phys_footprint : nil
    }

    static func availableBytes() -> UInt64 { UInt64(os_proc_available_memory()) }

    static func describe() -> String {
        let mb = { (b: UInt64) in String(format: "%.0f MB", Double(b) / 1_048_576) }
        return "footprint \(footprintBytes().map(mb) ?? "?"), available \(mb(availableBytes()))"
    }
}
