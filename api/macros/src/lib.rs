//! # oxray-macros
//!
//! Procedural macros for oxray: `#[oxray::remote]` and `#[oxray::main]`. Users reach them
//! through the `oxray` crate, never directly.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{parse_macro_input, FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type};

/// Makes a function callable as a remote task: keeps `f` as it is and adds a module `f` with
/// `f::remote(args..) -> oxray::Result<ObjectRef<R>>` and `f::options()`. Each argument may be a
/// value or a ref (`&ObjectRef<T>`) to an object holding the parameter's type. A parameter of
/// type `ObjectView<T>` reads its argument in place from the node's store. A function returning
/// `Result<T, E>` gives an `ObjectRef<T>`; its `Err` becomes `Error::TaskFailed`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[oxray::remote] takes no arguments; set options per call with f::options()",
        )
        .to_compile_error()
        .into();
    }
    let f = parse_macro_input!(item as ItemFn);
    match expand_remote(&f) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The last path segment of a type and its angle-bracketed type arguments.
fn last_segment(ty: &Type) -> Option<(String, Vec<Type>)> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    let args = match &seg.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((seg.ident.to_string(), args))
}

fn expand_remote(f: &ItemFn) -> syn::Result<Tokens> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "remote functions cannot be generic: workers look them up by name",
        ));
    }
    if sig.asyncness.is_some() {
        return Err(syn::Error::new_spanned(
            sig.asyncness,
            "remote functions cannot be async",
        ));
    }
    let vis = &f.vis;
    let name = &sig.ident;
    let mut decode = Vec::new();
    let mut params = Vec::new();
    let mut arg_names = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new_spanned(
                input,
                "remote functions cannot take self",
            ));
        };
        let ty = &*pt.ty;
        let arg = format_ident!("__arg{}", i);
        match last_segment(ty) {
            Some((ident, args)) if ident == "ObjectView" && args.len() == 1 => {
                let inner = &args[0];
                decode.push(quote! { let #arg = __args.view::<#inner>(#i)?; });
                params.push(quote! { #arg: impl ::oxray::IntoArg<#inner> });
            }
            _ => {
                decode.push(quote! { let #arg = __args.value::<#ty>(#i)?; });
                params.push(quote! { #arg: impl ::oxray::IntoArg<#ty> });
            }
        }
        arg_names.push(arg);
    }
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let (ok_ty, fallible) = match last_segment(&ret) {
        Some((ident, args)) if ident == "Result" && !args.is_empty() => (args[0].clone(), true),
        _ => (ret.clone(), false),
    };
    let call = quote! { super::#name(#(#arg_names),*) };
    let wrap = if fallible {
        quote! {
            match #call {
                ::std::result::Result::Ok(v) => ::std::result::Result::Ok(::std::boxed::Box::new(v)),
                ::std::result::Result::Err(e) => ::std::result::Result::Err(
                    ::oxray::__private::TaskError::App(::std::string::ToString::to_string(&e))),
            }
        }
    } else {
        quote! { ::std::result::Result::Ok(::std::boxed::Box::new(#call)) }
    };
    let doc = format!("Remote calls of [`{name}`](fn@super::{name}).");
    let remote_doc = format!("Submits `{name}(..)` as a task; arguments are values or refs.");
    Ok(quote! {
        #f

        #[doc = #doc]
        #[allow(non_snake_case, unused_imports, clippy::module_inception)]
        #vis mod #name {
            use super::*;

            #[::oxray::__private::linkme::distributed_slice(::oxray::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::oxray::__private::linkme)]
            static __OXRAY_REGISTER: ::oxray::__private::RemoteFunction =
                ::oxray::__private::RemoteFunction { name: ::std::module_path!(), invoke: __invoke };

            fn __invoke(
                __args: &::oxray::__private::TaskArgs<'_>,
            ) -> ::std::result::Result<
                ::std::boxed::Box<dyn ::oxray::__private::ReturnValue>,
                ::oxray::__private::TaskError,
            > {
                #(#decode)*
                #wrap
            }

            #[doc = #remote_doc]
            pub fn remote(#(#params),*) -> ::oxray::Result<::oxray::ObjectRef<#ok_ty>> {
                options().remote(#(#arg_names),*)
            }

            /// Options for one call: `options().num_cpus(2.0).remote(..)`.
            pub fn options() -> Options {
                Options(::oxray::TaskOptions::new(::std::module_path!()))
            }

            /// Options for one call of this function.
            #[derive(Debug, Clone)]
            pub struct Options(::oxray::TaskOptions);

            impl Options {
                /// CPUs the task holds while it runs (default 1).
                pub fn num_cpus(self, n: f64) -> Self { Options(self.0.num_cpus(n)) }
                /// A custom resource the task needs.
                pub fn resource(self, name: &str, amount: f64) -> Self {
                    Options(self.0.resource(name, amount))
                }
                /// Custom resources the task needs.
                pub fn resources<'a>(self, rs: impl ::std::iter::IntoIterator<Item = (&'a str, f64)>) -> Self {
                    Options(self.0.resources(rs))
                }
                /// Retries when the worker dies (default 3).
                pub fn max_retries(self, n: u32) -> Self { Options(self.0.max_retries(n)) }
                /// Also retry on panic or `Err`.
                pub fn retry_exceptions(self, yes: bool) -> Self { Options(self.0.retry_exceptions(yes)) }
                /// A name for the task.
                pub fn name(self, name: impl ::std::convert::Into<::std::string::String>) -> Self {
                    Options(self.0.name(name))
                }
                #[doc = #remote_doc]
                pub fn remote(self, #(#params),*) -> ::oxray::Result<::oxray::ObjectRef<#ok_ty>> {
                    ::oxray::__private::submit_task(
                        self.0,
                        ::std::vec![#(::oxray::IntoArg::into_arg(#arg_names)),*],
                    )
                }
            }
        }
    })
}

/// Runs `main` with oxray initialized: `oxray::init()` first (an embedded node, or the cluster
/// at `OXRAY_ADDRESS`), shut down when `main` returns. Worker processes never reach `main`.
#[proc_macro_attribute]
pub fn main(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut f = parse_macro_input!(item as ItemFn);
    let body = &f.block;
    let new_body: syn::Block = syn::parse_quote!({
        let __oxray_cluster = match ::oxray::init() {
            ::std::result::Result::Ok(c) => c,
            ::std::result::Result::Err(e) => {
                ::std::eprintln!("oxray: cannot start: {e}");
                ::std::process::exit(1);
            }
        };
        #body
    });
    *f.block = new_body;
    quote!(#f).into()
}
