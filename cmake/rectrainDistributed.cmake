# What the LibTorch found provides for rectrain/dist (c10d's Gloo and NCCL
# backends): its headers, the backend's headers and its symbols. Sets
# RECTRAIN_HAS_GLOO and RECTRAIN_HAS_NCCL (cached) and, where LibTorch
# says it has a backend (USE_C10D_GLOO, USE_C10D_NCCL) that cannot be
# used, the definition that turns it off in rectrain's headers, so a
# program fails with rectrain's message at run time instead of at link
# time. Cheap: no LibTorch header is compiled (the symbol is declared by
# hand; a C++ name's mangling does not hold its return type).
include_guard(GLOBAL)
include(CheckCXXSourceCompiles)
include(CMakePushCheckState)

function(rectrain_detect_distributed)
  if(DEFINED CACHE{RECTRAIN_HAS_GLOO})
    return()
  endif()
  set(torch_definitions "")
  if(TARGET torch_cpu)
    get_target_property(torch_definitions torch_cpu INTERFACE_COMPILE_DEFINITIONS)
  endif()
  if(NOT torch_definitions)
    set(torch_definitions "")
  endif()
  get_target_property(torch_includes torch INTERFACE_INCLUDE_DIRECTORIES)
  # The library file itself: try_compile does not bring in the targets that
  # LibTorch's targets link (torch_cpu_library in LibTorch 2.x).
  set(torch_cpu_file "")
  if(TARGET torch_cpu)
    foreach(property IMPORTED_LOCATION IMPORTED_LOCATION_RELEASE IMPORTED_LOCATION_RELWITHDEBINFO
                     IMPORTED_LOCATION_MINSIZEREL IMPORTED_LOCATION_DEBUG IMPORTED_LOCATION_NOCONFIG)
      get_target_property(location torch_cpu ${property})
      if(location AND NOT torch_cpu_file)
        set(torch_cpu_file "${location}")
      endif()
    endforeach()
  endif()
  set(notes "")
  set(found_names "")
  foreach(backend GLOO NCCL)
    set(found OFF)
    if(backend STREQUAL "GLOO")
      set(header gloo/config.h)
    else()
      set(header nccl.h)
    endif()
    if("USE_C10D_${backend}" IN_LIST torch_definitions)
      cmake_push_check_state(RESET)
      set(CMAKE_REQUIRED_QUIET ON)
      set(CMAKE_REQUIRED_INCLUDES ${torch_includes})
      if(backend STREQUAL "GLOO" AND torch_cpu_file)
        set(CMAKE_REQUIRED_LIBRARIES "${torch_cpu_file}")
        check_cxx_source_compiles("
          #include <gloo/config.h>
          #include <string>
          namespace c10d { struct ProcessGroupGloo { static int createDeviceForHostname(const std::string&); }; }
          int main() { return &c10d::ProcessGroupGloo::createDeviceForHostname != nullptr ? 0 : 1; }"
          rectrain_links_gloo)
        set(found ${rectrain_links_gloo})
      elseif(backend STREQUAL "GLOO")  # no library file to check: the header decides
        check_cxx_source_compiles("
          #include <gloo/config.h>
          int main() { return 0; }" rectrain_links_gloo)
        set(found ${rectrain_links_gloo})
      else()
        check_cxx_source_compiles("
          #include <nccl.h>
          int main() { return 0; }" rectrain_links_nccl)
        set(found ${rectrain_links_nccl})
      endif()
      cmake_pop_check_state()
      if(NOT found)
        list(APPEND notes "LibTorch has ${backend} but <${header}> or its symbols are missing")
      endif()
    endif()
    set(RECTRAIN_HAS_${backend} ${found} CACHE BOOL "rectrain/dist can use c10d's ${backend} backend" FORCE)
    if(found)
      string(TOLOWER " ${backend}" name)
      string(APPEND found_names "${name}")
    endif()
  endforeach()
  if(NOT found_names)
    set(found_names " none (for Gloo on Debian: apt install libgloo-dev)")
  endif()
  set(message "rectrain: distributed backends:${found_names}")
  foreach(note IN LISTS notes)
    string(APPEND message "; ${note}")
  endforeach()
  message(STATUS "${message}")
endfunction()

# The definitions rectrain's headers need for what was detected on this
# machine: a backend LibTorch announces but this build cannot use is turned
# off. BUILD_TREE: in rectrain's own build tree only (BUILD_INTERFACE, not
# exported): an installed rectrain detects again where it is used
# (rectrainConfig.cmake calls this on the imported target).
function(rectrain_distributed_definitions target)
  rectrain_detect_distributed()
  foreach(backend GLOO NCCL)
    if(NOT RECTRAIN_HAS_${backend})
      set(definition RECTRAIN_NO_${backend})
      if("${ARGN}" STREQUAL "BUILD_TREE")
        set(definition "$<BUILD_INTERFACE:${definition}>")
      endif()
      set_property(TARGET ${target} APPEND PROPERTY INTERFACE_COMPILE_DEFINITIONS "${definition}")
    endif()
  endforeach()
endfunction()
